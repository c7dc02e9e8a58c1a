//! Building and running the ingest service: `build` binds before anything runs, so tests ask for
//! port 0 and read the port back, and `main` stays a few lines.

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use bridge_shared::amqp::{until_stopped, BrokerLink, Topology};
use bridge_shared::integrations::store::Location;
use bridge_shared::lifecycle::{Liveness, Stopper};
use bridge_shared::postgres::Postgres;
use bridge_shared::reload::{IntegrationsHandle, ReloadMetrics};
use bridge_shared::service::{bind, Served, Service, StartError};
use bridge_shared::settings::Settings;
use bridge_shared::telemetry::IngestMetrics;
use prometheus::Registry;
use tokio::task::JoinHandle;

use crate::refusals::RefusalLog;
use crate::routes;
use crate::sink::EventSink;
use crate::spool::Spool;
use crate::state::AppState;

pub struct Application {
    served: Served,
    /// `/metrics` with the probes, on `[ingest] metrics_listen`, running on a task of its own
    /// (an actix server runs only while polled); stopped after `served`.
    metrics_port: u16,
    metrics: actix_web::dev::ServerHandle,
    metrics_task: JoinHandle<std::io::Result<()>>,
    stopper: Stopper,
    supervisor: JoinHandle<Option<Option<Arc<lapin::Connection>>>>,
    tasks: Vec<JoinHandle<Option<()>>>,
    link: Arc<BrokerLink>,
    spool: Arc<Spool>,
    spool_dir: std::path::PathBuf,
    drain_on_stop: Duration,
}

/// Time the HTTP server gives in-flight requests at shutdown; then the spool gets `[ingest]
/// drain_on_stop` to reach the broker, and the background tasks what is left.
const HTTP_SHUTDOWN: Duration = Duration::from_secs(10);
/// The settings the listeners are read from, as errors name them.
const LISTEN: &str = "ingest.listen";
const METRICS_LISTEN: &str = "ingest.metrics_listen";

const TASK_SHUTDOWN: Duration = Duration::from_secs(5);

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let registry = Registry::new();
        let metrics = IngestMetrics::new(&registry);
        // Only the integrations store, if it is PostgreSQL: its outage leaves ingest on the last
        // good set, so it shows in `bridge_postgres_up`, not in readiness.
        let postgres = Postgres::reporting(settings.postgres_timeout, bridge_shared::telemetry::postgres_up(&registry));
        let integrations =
            IntegrationsHandle::open(&Location::of(&settings), ReloadMetrics::new(&registry), &postgres).await?;
        let spool = Spool::open(&settings.ingest.spool_dir, settings.ingest.spool_max_bytes, metrics.clone())
            .map_err(|e| StartError::state("ingest.spool_dir", e))?;
        let spool = Arc::new(spool);
        let link = BrokerLink::new(metrics.amqp.connected.clone(), metrics.amqp.node.clone());
        let topology = Topology::new(&settings.amqp.topology_prefix);
        let stopper = Stopper::default();
        let stop = stopper.listener();
        let liveness = Liveness::default();
        let broker =
            settings.amqp.session(topology.clone(), "verbox-bridge ingest", metrics.amqp.connect_failures.clone());
        let serve = until_stopped(stop.clone());
        let supervisor =
            liveness.spawn("broker supervisor", &stop, link.clone().supervise(broker, stop.clone(), serve));
        let tasks = vec![
            liveness.spawn(
                "spool drain",
                &stop,
                spool.clone().drain(link.clone(), topology.events_exchange(), stop.clone()),
            ),
            liveness.spawn(
                "integrations watcher",
                &stop,
                integrations.clone().watch(Duration::from_secs(2), stop.clone()),
            ),
        ];
        let state = web::Data::new(AppState {
            integrations,
            sink: EventSink { link: link.clone(), spool: spool.clone(), exchange: topology.events_exchange() },
            metrics,
            registry,
            max_body_bytes: settings.ingest.max_body_bytes,
            liveness,
            refusals: RefusalLog::default(),
            times_out_of_range: RefusalLog::default(),
        });
        let (listener, port) = bind(LISTEN, settings.ingest.listen)?;
        let (metrics_listener, metrics_port) = bind(METRICS_LISTEN, settings.ingest.metrics_listen)?;
        let metrics = metrics_server(state.clone(), metrics_listener)?;
        let server = webhook_server(state, listener, settings.ingest.workers)?;
        tracing::info!(port, metrics_port, spooled = spool.len(), "ingest listening");
        Ok(Application {
            served: Served::new(port, server),
            metrics_port,
            metrics: metrics.handle(),
            metrics_task: tokio::spawn(metrics),
            stopper,
            supervisor,
            tasks,
            link,
            spool,
            spool_dir: settings.ingest.spool_dir.clone(),
            drain_on_stop: settings.ingest.drain_on_stop,
        })
    }
}

/// The metrics and probes, on their own listener (not the public one: the metrics name
/// integrations and their pause reasons).
fn metrics_server(state: web::Data<AppState>, listener: std::net::TcpListener) -> Result<Server, StartError> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/metrics", web::get().to(routes::metrics))
            .route("/healthz", web::get().to(routes::healthz))
            .route("/readyz", web::get().to(routes::readyz))
            .default_service(web::to(routes::not_found))
    })
    .workers(1)
    .listen(listener)
    .map_err(StartError::bind(METRICS_LISTEN))?;
    Ok(server.run())
}

/// The public listener: the webhooks, and the probes a load balancer asks; `workers` 0 is one per
/// core.
fn webhook_server(
    state: web::Data<AppState>,
    listener: std::net::TcpListener,
    workers: usize,
) -> Result<Server, StartError> {
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/v1/verbox/{integration}/{kind}/{token}", web::post().to(routes::webhook))
            .route("/healthz", web::get().to(routes::healthz))
            .route("/readyz", web::get().to(routes::readyz))
            .default_service(web::to(routes::not_found))
    })
    .shutdown_timeout(HTTP_SHUTDOWN.as_secs());
    if workers > 0 {
        server = server.workers(workers);
    }
    Ok(server.listen(listener).map_err(StartError::bind(LISTEN))?.run())
}

impl Service for Application {
    fn served(&self) -> &Served {
        &self.served
    }

    fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    /// Serves until SIGTERM/SIGINT (or [`Served::handle`]`.stop`): stops accepting and answers what
    /// is in flight; then, while the broker link still runs, gives the spool `drain_on_stop` to
    /// reach any node (a replica scaled down for good must not strand what it accepted); then
    /// stops the background tasks, closes the session and flushes the spool.
    async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.served.stopped().await;
        if !self.spool.is_empty() {
            let spooled = self.spool.len();
            tracing::info!(spooled, "draining the spool to the broker before stopping");
            if self.spool.emptied(self.drain_on_stop).await {
                tracing::info!(spooled, "spool drained before stopping");
            } else {
                tracing::error!(
                    left = self.spool.len(),
                    spool_dir = %self.spool_dir.display(),
                    "events stay in the spool: start ingest on this directory again, or run `ingest drain-spool` on it"
                );
            }
        }
        self.stopper.stop();
        let connection = tokio::time::timeout(TASK_SHUTDOWN, self.supervisor).await.ok().and_then(Result::ok).flatten();
        if let Some(connection) = connection.flatten() {
            self.link.close(&connection).await;
        }
        for task in self.tasks {
            let _ = tokio::time::timeout(TASK_SHUTDOWN, task).await;
        }
        self.spool.flush().await;
        self.metrics.stop(true).await;
        let _ = self.metrics_task.await;
        tracing::info!(spooled = self.spool.len(), "ingest stopped");
        served
    }
}
