//! `deliver console`: the tenants' settings page as a service. An admin API (JSON, behind admin
//! bearer tokens) over the integrations store, the CoMagic account's pick-lists, `deliver check`
//! on every save, the dead letters and a "send a test chat" that follows one event through; and a
//! web console (plain HTML, CSS and JavaScript, served from the binary) on top of it.
//!
//! It lives in deliver because everything it shows or does is deliver's: the CoMagic client and
//! check, the dead-letter commands, the per-integration state deliver exports.

mod auth;
mod dead_letters;
mod error;
mod history;
mod integrations;
mod state;
mod test_chat;
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

use self::state::Sampler;
use self::test_chat::TestChats;

pub use self::auth::{AdminTokens, TokensError, ADMIN_TOKENS_VAR};

/// The setting `listen` is read from, as errors name it.
const LISTEN: &str = "console.listen";
/// How long ingest may take to answer a test chat.
const TEST_CHAT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What every handler reads.
pub struct ConsoleState {
    pub settings: Settings,
    pub store: Store,
    tokens: AdminTokens,
    comagic: ComagicClient,
    /// Posts test chats to ingest.
    http: reqwest::Client,
    test_chats: Arc<TestChats>,
    sampler: Arc<Sampler>,
    /// Secrets named by environment variable (`comagic_token_env`) are resolved from here: the
    /// variables that start with `[console] secret_env_prefix`, no other.
    env: HashMap<String, String>,
}

pub struct Console {
    served: Served,
    /// Stops the traces listener and the state sampler once the server has stopped.
    stopper: Stopper,
}

impl Console {
    /// Opens the store and binds `[console] listen` (port 0 in tests).
    pub async fn build(settings: Settings, tokens: AdminTokens) -> Result<Self, StartError> {
        let store = Store::open_with(&Location::of(&settings), &Postgres::new(settings.postgres_timeout)).await?;
        let (listener, port) = bind(LISTEN, settings.console.listen)?;
        let test_chats = Arc::new(TestChats::default());
        let sampler = Arc::new(Sampler::default());
        let stopper = Stopper::default();
        tokio::spawn(test_chats.clone().listen(settings.amqp.clone(), stopper.listener()));
        let pages = settings.console.metrics_pages(&settings.deliver);
        tokio::spawn(sampler.clone().run(pages, settings.amqp.clone(), stopper.listener()));
        let http = reqwest::Client::builder()
            .timeout(TEST_CHAT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client builds");
        // Only the variables a form may name: never the admin tokens or a database URL.
        let env = std::env::vars().filter(|(name, _)| settings.console.env_name_allowed(name)).collect();
        let state = web::Data::new(ConsoleState {
            settings,
            store,
            tokens,
            comagic: crate::check::client(),
            http,
            test_chats,
            sampler,
            env,
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
    ("/history.js", "text/javascript", include_str!("assets/history.js")),
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

fn routes(config: &mut web::ServiceConfig) {
    for &(path, content_type, body) in ASSETS {
        config.route(path, web::get().to(asset(content_type, body)));
    }
    config.service(
        web::scope("/api")
            .wrap(from_fn(auth::admins_only))
            // What the API answers is about one tenant's account: no cache keeps it.
            .wrap(DefaultHeaders::new().add((header::CACHE_CONTROL, "no-store")))
            .app_data(
                web::JsonConfig::default().error_handler(|e, _| error::ApiError::BadRequest(e.to_string()).into()),
            )
            .route("/integrations", web::get().to(integrations::list))
            .route("/integrations", web::post().to(integrations::create))
            .route("/integrations/{id}", web::get().to(integrations::get))
            .route("/integrations/{id}", web::put().to(integrations::update))
            .route("/integrations/{id}", web::delete().to(history::delete))
            .route("/integrations/{id}/deactivate", web::post().to(integrations::deactivate))
            .route("/integrations/{id}/history", web::get().to(history::list))
            .route("/integrations/{id}/restore", web::post().to(history::restore))
            .route("/integrations/{id}/setup", web::get().to(integrations::setup))
            .route("/integrations/{id}/account", web::get().to(integrations::account))
            .route("/integrations/{id}/state", web::get().to(integrations::state))
            .route("/integrations/{id}/test-chat", web::post().to(test_chat::send))
            .route("/test-chats/{event_id}", web::get().to(test_chat::follow))
            .route("/integrations/{id}/dead-letters", web::get().to(dead_letters::list))
            .route("/integrations/{id}/dead-letters/replay", web::post().to(dead_letters::replay))
            .route("/integrations/{id}/dead-letters/purge", web::post().to(dead_letters::purge))
            .route("/account", web::post().to(integrations::account_for_form)),
    );
}
