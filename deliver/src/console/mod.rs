//! `deliver console`: the tenants' settings page as a service. An admin API (JSON, behind admin
//! bearer tokens) over the integrations store, the CoMagic account's pick-lists, `deliver check`
//! on every save, the dead letters and a "send a test chat" that follows one event through; and a
//! web console (plain HTML, CSS and JavaScript, served from the binary) on top of it.
//!
//! It lives in deliver because everything it shows or does is deliver's: the CoMagic client and
//! check, the dead-letter commands, the per-integration state deliver exports.

mod access;
mod applied;
mod auth;
mod dead_letters;
mod error;
mod events;
pub use self::events::Search;
mod history;
mod integrations;
mod limits;
mod operator_fields;
mod principal;
mod random;
mod state;
mod test_chat;
mod tokens;
mod views;

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, App, HttpResponse, HttpServer};
use bridge_shared::comagic::ComagicClient;
use bridge_shared::integrations::store::{Location, Store};
use bridge_shared::lifecycle::Stopper;
use bridge_shared::postgres::Postgres;
use bridge_shared::service::{bind, Served, Service, StartError};
use bridge_shared::settings::Settings;

use self::state::{Pages, Sampler};
use self::test_chat::TestChats;
use self::tokens::store::TokenStore;
use crate::journey::reader::Reader;

pub use self::access::{Access, ApiRoute};
pub use self::auth::{AdminTokens, TokensError, ADMIN_TOKENS_VAR};
pub use self::test_chat::TEST_CHAT_BURST;
pub use self::tokens::store::FILE_NAME as TOKENS_FILE;

/// The setting `listen` is read from, as errors name it.
const LISTEN: &str = "console.listen";
/// Keys (integrations, peers) an allowance keeps at most.
const TRACKED_KEYS: usize = 10_000;
/// How long ingest may take to answer a test chat.
const TEST_CHAT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What every handler reads.
/// A page's worth of quick looks at once, then four a second: a person at the page, not a scraper.
const JOURNEY_READS_BURST: u32 = 30;
const JOURNEY_READS_REFILL: std::time::Duration = std::time::Duration::from_millis(250);

pub struct ConsoleState {
    pub settings: Settings,
    pub store: Store,
    tokens: AdminTokens,
    /// The tokens operators issued.
    issued: TokenStore,
    /// Refused tokens per peer address: [`auth::SIGN_IN_GUESSES`], then one per refill.
    sign_ins: limits::Allowances,
    /// Scans of the dead-letter queue per integration: each reads the whole queue.
    dead_letter_scans: limits::Allowances,
    comagic: ComagicClient,
    /// Posts test chats to ingest.
    http: reqwest::Client,
    test_chats: Arc<TestChats>,
    /// Test chats per integration: [`test_chat::TEST_CHAT_BURST`], then one a minute.
    test_chat_allowances: limits::Allowances,
    sampler: Arc<Sampler>,
    /// Secrets named by environment variable (`comagic_token_env`) are resolved from here: the
    /// variables that start with `[console] secret_env_prefix`, no other.
    env: HashMap<String, String>,
    /// Where the events' journeys are read.
    journeys: Reader,
    /// Reads of the journey per token: [`JOURNEY_READS_BURST`], then one per [`JOURNEY_READS_REFILL`].
    journey_reads: limits::Allowances,
}

pub struct Console {
    served: Served,
    /// Stops the traces listener and the state sampler once the server has stopped.
    stopper: Stopper,
}

impl Console {
    /// Opens the store and binds `[console] listen` (port 0 in tests).
    pub async fn build(settings: Settings, tokens: AdminTokens) -> Result<Self, StartError> {
        Self::build_with_env(settings, tokens, std::env::vars()).await
    }

    /// [`Self::build`] with `env` as the console's environment: a test gives the console a
    /// variable the services in the same process do not see, as separate processes would have.
    pub async fn build_with_env(
        settings: Settings,
        tokens: AdminTokens,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, StartError> {
        let location = Location::of(&settings);
        let postgres = Postgres::new(settings.postgres_timeout);
        let store = Store::open_with(&location, &postgres).await?;
        let issued =
            TokenStore::open(&location, &postgres).await.map_err(|e| StartError::state("console tokens", e))?;
        let journeys =
            Reader::open(&settings, &postgres).await.map_err(|e| StartError::state("the journey's store", e))?;
        let (listener, port) = bind(LISTEN, settings.console.listen)?;
        let test_chats = Arc::new(TestChats::default());
        let sampler = Arc::new(Sampler::default());
        let stopper = Stopper::default();
        tokio::spawn(test_chats.clone().listen(settings.amqp.clone(), stopper.listener()));
        let pages = Pages {
            deliver: settings.console.metrics_pages(&settings.deliver),
            ingest: settings.console.ingest_pages(&settings.ingest),
        };
        tokio::spawn(sampler.clone().run(pages, settings.amqp.clone(), stopper.listener()));
        let http = reqwest::Client::builder()
            .timeout(TEST_CHAT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client builds");
        // Only the variables a form may name: never the admin tokens or a database URL.
        let env = env.into_iter().filter(|(name, _)| settings.console.env_name_allowed(name)).collect();
        let state = web::Data::new(ConsoleState {
            settings,
            store,
            tokens,
            issued,
            sign_ins: limits::Allowances::new(auth::SIGN_IN_GUESSES, auth::SIGN_IN_REFILL, TRACKED_KEYS),
            dead_letter_scans: limits::Allowances::new(10, std::time::Duration::from_secs(3), TRACKED_KEYS),
            comagic: crate::check::client(),
            http,
            test_chats,
            test_chat_allowances: limits::Allowances::new(
                test_chat::TEST_CHAT_BURST,
                test_chat::TEST_CHAT_REFILL,
                TRACKED_KEYS,
            ),
            sampler,
            env,
            journeys,
            journey_reads: limits::Allowances::new(JOURNEY_READS_BURST, JOURNEY_READS_REFILL, TRACKED_KEYS),
        });
        let server =
            HttpServer::new(move || App::new().wrap(security_headers()).app_data(state.clone()).configure(routes))
                .workers(2)
                .listen(listener)
                .map_err(StartError::bind(LISTEN))?
                .run();
        tracing::info!(port, "console listening");
        Ok(Console { served: Served::new(port, server), stopper })
    }
}

impl Service for Console {
    fn served(&self) -> &Served {
        &self.served
    }

    async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.served.stopped().await;
        self.stopper.stop();
        result
    }
}

fn asset(content_type: &'static str, body: &'static str) -> impl Fn() -> std::future::Ready<HttpResponse> + Clone {
    move || std::future::ready(HttpResponse::Ok().content_type(content_type).body(body))
}

/// The page's files, served from the binary; the page names them relative to itself.
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", include_str!("assets/index.html")),
    ("/console.css", "text/css", include_str!("assets/console.css")),
    ("/main.js", "text/javascript", include_str!("assets/main.js")),
    ("/common.js", "text/javascript", include_str!("assets/common.js")),
    ("/list.js", "text/javascript", include_str!("assets/list.js")),
    ("/form.js", "text/javascript", include_str!("assets/form.js")),
    ("/detail.js", "text/javascript", include_str!("assets/detail.js")),
    ("/tools.js", "text/javascript", include_str!("assets/tools.js")),
    ("/tokens.js", "text/javascript", include_str!("assets/tokens.js")),
    ("/applied.js", "text/javascript", include_str!("assets/applied.js")),
    ("/history.js", "text/javascript", include_str!("assets/history.js")),
    ("/events.js", "text/javascript", include_str!("assets/events.js")),
];

/// The page loads its own script, style sheet and API only, and is never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Headers on every answer of the console, page and API.
fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "no-referrer"))
}

/// Declares the API's routes and who may call each ([`Access`]) in one place: [`API_ROUTES`]
/// for [`access::authorize`] (and the tests, which try every route with every role) and
/// `api_routes` to register them, so neither can drift from the other.
macro_rules! api {
    ($(($method:ident, $path:literal, $access:ident, $handler:path)),* $(,)?) => {
        pub const API_ROUTES: &[ApiRoute] =
            &[$(ApiRoute { method: stringify!($method), path: $path, access: Access::$access }),*];

        fn api_routes(config: &mut web::ServiceConfig) {
            $(config.route($path, web::$method().to($handler));)*
        }
    };
}

api![
    (get, "/whoami", Anyone, tokens::whoami),
    (get, "/integrations", Narrowed, integrations::list),
    (post, "/integrations", Operator, integrations::create),
    (get, "/integrations/{id}", Integration, integrations::get),
    (put, "/integrations/{id}", Integration, integrations::update),
    (delete, "/integrations/{id}", Operator, history::delete),
    (post, "/integrations/{id}/deactivate", Integration, integrations::deactivate),
    (get, "/integrations/{id}/history", Integration, history::list),
    (post, "/integrations/{id}/restore", Integration, history::restore),
    (get, "/integrations/{id}/setup", Integration, integrations::setup),
    (get, "/integrations/{id}/account", Integration, integrations::account),
    (get, "/integrations/{id}/state", Integration, integrations::state),
    (post, "/integrations/{id}/test-chat", Integration, test_chat::send),
    (get, "/test-chats/{event_id}", Narrowed, test_chat::follow),
    (get, "/integrations/{id}/events", Integration, events::find),
    (get, "/events/{event_id}", Narrowed, events::get),
    (post, "/events/{event_id}/send-again", Narrowed, events::send_again),
    (get, "/integrations/{id}/dead-letters", Integration, dead_letters::list),
    (post, "/integrations/{id}/dead-letters/replay", Integration, dead_letters::replay),
    (post, "/integrations/{id}/dead-letters/purge", Operator, dead_letters::purge),
    (post, "/account", Narrowed, integrations::account_for_form),
    (get, "/tokens", Operator, tokens::list),
    (post, "/tokens", Operator, tokens::issue),
    (post, "/tokens/{id}/revoke", Operator, tokens::revoke),
];

fn routes(config: &mut web::ServiceConfig) {
    for &(path, content_type, body) in ASSETS {
        config.route(path, web::get().to(asset(content_type, body)));
    }
    config.service(
        web::scope("/api")
            .wrap(from_fn(auth::signed_in))
            // What the API answers is about one tenant's account: no cache keeps it.
            .wrap(DefaultHeaders::new().add((header::CACHE_CONTROL, "no-store")))
            .app_data(
                web::JsonConfig::default().error_handler(|e, _| error::ApiError::BadRequest(e.to_string()).into()),
            )
            .app_data(
                web::QueryConfig::default().error_handler(|e, _| error::ApiError::BadRequest(e.to_string()).into()),
            )
            .configure(api_routes),
    );
}
