//! Where the console and `deliver events` read journeys: PostgreSQL itself when the ledger is
//! shared, the one deliver's socket when it is local (sled).

use std::path::PathBuf;

use bridge_shared::postgres::{Postgres, Role};
use bridge_shared::settings::Settings;

use super::query::{Page, Query, MAX_LIMIT};
use super::socket::{ask, Answer, Request};
use super::{Journey, PgJourney};

pub enum Reader {
    Shared(PgJourney),
    Local(PathBuf),
}

impl Reader {
    /// The journeys of the ledger `settings` name; a shared one's database is connected to (and
    /// its journey table made, should no deliver have made it yet).
    pub async fn open(settings: &Settings, postgres: &Postgres) -> Result<Self, String> {
        let url = &settings.deliver.ledger_postgres;
        if url.is_empty() {
            return Ok(Reader::Local(settings.deliver.ledger_dir.clone()));
        }
        let database = postgres.database(url, Role::Journey).map_err(|e| e.to_string())?;
        let scope = settings.amqp.topology_prefix.clone();
        PgJourney::connect(database, &scope).await.map(Reader::Shared).map_err(|e| e.to_string())
    }

    /// A page of `q`'s journeys, newest first.
    pub async fn find(&self, mut q: Query) -> Result<Page, String> {
        q.limit = q.limit.clamp(1, MAX_LIMIT);
        let mut page = match self {
            Reader::Shared(s) => s.find(&q).await.map_err(|e| e.to_string())?,
            Reader::Local(dir) => match ask(dir, &Request::Find(q)).await? {
                Answer::Page(page) => page,
                other => return Err(unexpected(other)),
            },
        };
        page.events.iter_mut().for_each(Journey::hide_private);
        Ok(page)
    }

    /// The journey of `event_id`, as shown.
    pub async fn get(&self, event_id: &str) -> Result<Option<Journey>, String> {
        let mut journey = self.read(Request::Get(event_id.to_owned())).await?;
        journey.iter_mut().for_each(Journey::hide_private);
        Ok(journey)
    }

    /// The journey of `event_id` with what is never shown (a skipped event's webhook, to send it
    /// again).
    pub async fn get_whole(&self, event_id: &str) -> Result<Option<Journey>, String> {
        self.read(Request::GetWhole(event_id.to_owned())).await
    }

    async fn read(&self, request: Request) -> Result<Option<Journey>, String> {
        match (self, &request) {
            (Reader::Shared(s), Request::Get(id) | Request::GetWhole(id)) => s.get(id).await.map_err(|e| e.to_string()),
            (Reader::Local(dir), _) => match ask(dir, &request).await? {
                Answer::Journey(journey) => Ok(journey.map(|j| *j)),
                other => Err(unexpected(other)),
            },
            (Reader::Shared(_), Request::Find(_)) => Err("not a read of one journey".into()),
        }
    }
}

fn unexpected(answer: Answer) -> String {
    match answer {
        Answer::Failed(error) => error,
        _ => "deliver answered another question".into(),
    }
}
