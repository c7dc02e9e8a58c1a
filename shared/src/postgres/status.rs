//! Whether each database of a process answers: `bridge_postgres_up{role}`, readiness, and one log
//! line when an outage starts and one when it ends (not one per statement: at thousands of events
//! a second that would be a flood). While a database is down a probe asks it every second, so the
//! state turns back even when nothing else needs the database.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use prometheus::{IntGauge, IntGaugeVec};

use super::{Database, DbError, Inner};

/// How often a database that does not answer is asked again, by the probe.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// What a database is for, as the metric, readiness and logs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// deliver's shared ledger and claims (`[deliver] ledger_postgres`).
    Ledger,
    /// The integrations store (`integrations_store`).
    Integrations,
    /// Each event's journey, beside the shared ledger (its own connection): not answering, it
    /// costs steps, never a delivery.
    Journey,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Ledger, Role::Integrations, Role::Journey];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ledger => "ledger",
            Role::Integrations => "integrations",
            Role::Journey => "journey",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One state per role, indexed by [`Role::index`].
const ROLES: usize = Role::ALL.len();

const UNUSED: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// The PostgreSQL side of one process: the deadline of every operation, and whether each of its
/// databases answers. Cheap to clone.
#[derive(Clone)]
pub struct Postgres {
    deadline: Duration,
    gauge: Option<IntGaugeVec>,
    states: Arc<[AtomicU8; ROLES]>,
}

impl Postgres {
    /// Operations time out after `deadline`; nothing is exported (commands, tests).
    pub fn new(deadline: Duration) -> Self {
        Postgres { deadline, gauge: None, states: Arc::new(std::array::from_fn(|_| AtomicU8::new(UNUSED))) }
    }

    /// The same, exporting each role's state in `gauge` (`bridge_postgres_up{role}`, made by
    /// the telemetry module).
    pub fn reporting(deadline: Duration, gauge: IntGaugeVec) -> Self {
        Postgres { gauge: Some(gauge), ..Self::new(deadline) }
    }

    /// The database at `url` (not connected yet: the first statement connects).
    pub fn database(&self, url: &str, role: Role) -> Result<Database, DbError> {
        let gauge = self.gauge.as_ref().map(|g| g.with_label_values(&[role.as_str()]));
        let status = Status { role, states: self.states.clone(), gauge };
        status.set(UP);
        Database::new(url, self.deadline, status)
    }

    /// The databases in use that do not answer now.
    pub fn down(&self) -> Vec<Role> {
        Role::ALL.into_iter().filter(|r| self.states[r.index()].load(Ordering::SeqCst) == DOWN).collect()
    }
}

/// One database's share of its process's [`Postgres`] state.
pub(super) struct Status {
    role: Role,
    states: Arc<[AtomicU8; ROLES]>,
    gauge: Option<IntGauge>,
}

impl Status {
    pub(super) fn role(&self) -> Role {
        self.role
    }

    pub(super) fn is_up(&self) -> bool {
        self.states[self.role.index()].load(Ordering::SeqCst) != DOWN
    }

    /// Sets the state; the one it replaces.
    fn set(&self, state: u8) -> u8 {
        if let Some(gauge) = &self.gauge {
            gauge.set(i64::from(state == UP));
        }
        self.states[self.role.index()].swap(state, Ordering::SeqCst)
    }

    /// The database answered a statement.
    pub(super) fn answered(&self) {
        if self.set(UP) == DOWN {
            tracing::info!(database = self.role.as_str(), "the database answers again");
        }
    }

    /// A statement of `database` got no answer: the start of an outage unless one is under way.
    pub(super) fn silent(&self, database: &Database, error: &DbError) {
        if self.set(DOWN) != DOWN {
            tracing::warn!(
                database = self.role.as_str(),
                %error,
                "the database does not answer; what needs it waits until it does"
            );
            probe(Arc::downgrade(&database.0));
        }
    }
}

/// Asks the database every [`PROBE_EVERY`] until it answers (or is dropped).
fn probe(database: Weak<Inner>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            let Some(inner) = database.upgrade() else { return };
            let database = Database(inner);
            if database.0.status.is_up() {
                return;
            }
            let _ = database.batch_execute("SELECT 1").await;
        }
    });
}
