//! Building and running the deliver worker: health and metrics on an HTTP port (port 0 in tests),
//! the consumer, the lanes, and the integrations watcher, wired in one place so `main` and the tests
//! start the same thing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use bridge_shared::amqp::{BrokerLink, Topology};
use bridge_shared::comagic::ComagicClient;
use bridge_shared::integrations::store::Location;
use bridge_shared::lifecycle::{Liveness, Stopper};
use bridge_shared::postgres::{Postgres, Role};
use bridge_shared::reload::{IntegrationsHandle, ReloadMetrics};
use bridge_shared::service::{bind, Served, Service, StartError};
use bridge_shared::settings::Settings;
use bridge_shared::telemetry::{self, ComagicMetrics, DeliverMetrics};
use prometheus::Registry;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::acks::Acks;
use crate::courier::{Courier, Panics};
use crate::intake::{Consuming, Intake, Windows};
use crate::journey::socket::socket_path;
use crate::journey::{serve_socket, Journal, JourneyMetrics, PgJourney, Store, Writer};
use crate::lanes::{LaneLimits, Lanes};
use crate::ledger::{Ledger, LedgerError};
use crate::outlet::{Outlet, RetryWarnings};
use crate::slots::Slots;
use crate::tenants::Tenants;

/// The setting `listen` is read from, as errors name it.
const LISTEN: &str = "deliver.listen";
/// A lane further behind than this parks its arrivals so it cannot hold up the other tenants.
const MAX_LANE_LAG: Duration = Duration::from_secs(5);
/// How often delivered ext_ids older than `ledger_keep` are pruned from the ledger.
const LEDGER_PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Of the 30 s shutdown budget: the batches in hand get this long to finish.
const LANES_SHUTDOWN: Duration = Duration::from_secs(20);

/// How long a stop waits for the journey's writer and upkeep.
const JOURNEY_SHUTDOWN: Duration = Duration::from_secs(5);

/// This process among the replicas (it holds ledger claims and its lease under this name): the
/// host (a pod's name in Kubernetes), the process id and when it started, so a restarted process
/// that gets its predecessor's pid (pid 1 in every container) never inherits its lease or claims.
fn replica_name() -> String {
    let host = bridge_shared::service::host_name();
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{host}/{}/{}", std::process::id(), started.as_nanos())
}

/// The ledger of `[deliver] ledger_dir`, or the shared one of `ledger_postgres` when it is set.
async fn open_ledger(settings: &Settings, postgres: &Postgres) -> Result<Ledger, StartError> {
    if settings.deliver.ledger_postgres.is_empty() {
        return Ledger::open(&settings.deliver.ledger_dir).map_err(|e| StartError::state("deliver.ledger_dir", e));
    }
    let shared = |e: LedgerError| StartError::state("deliver.ledger_postgres", e);
    let database = postgres.database(&settings.deliver.ledger_postgres, Role::Ledger).map_err(|e| shared(e.into()))?;
    Ledger::connect(database, &settings.amqp.topology_prefix, &replica_name()).await.map_err(shared)
}

/// The journey beside the ledger (its own connection to a shared one), or none with
/// `journey_keep = 0s`; the store is returned when it is the local one, which is read through
/// this process's socket.
async fn open_journal(
    settings: &Settings,
    postgres: &Postgres,
    ledger: &Ledger,
    registry: &Registry,
    integrations: &IntegrationsHandle,
) -> Result<(Arc<Journal>, Writer, Option<Store>), StartError> {
    let d = &settings.deliver;
    let store = if d.journey_keep.is_zero() {
        None
    } else if let Some(local) = ledger.local_journey() {
        Some(Store::Local(local))
    } else {
        let shared = |e: LedgerError| StartError::state("deliver.ledger_postgres", e);
        let database = postgres.database(&d.ledger_postgres, Role::Journey).map_err(|e| shared(e.into()))?;
        let journey =
            PgJourney::connect(database, &settings.amqp.topology_prefix).await.map_err(|e| shared(e.into()))?;
        Some(Store::Shared(Arc::new(journey)))
    };
    let local = store.clone().filter(|s| matches!(s, Store::Local(_)));
    let metrics = JourneyMetrics::new(registry);
    let (journal, writer) = Journal::new(store, &replica_name(), metrics, integrations.clone());
    Ok((Arc::new(journal), writer, local))
}

struct HealthState {
    registry: Registry,
    ready: Arc<AtomicBool>,
    liveness: Liveness,
    link: Arc<BrokerLink>,
    postgres: Postgres,
}

pub struct Application {
    served: Served,
    stopper: Stopper,
    consumer: JoinHandle<Option<Option<Arc<lapin::Connection>>>>,
    watcher: JoinHandle<Option<()>>,
    pruner: JoinHandle<Option<()>>,
    /// Keeps the ledger lease until the lanes have settled (not until the stop starts: the batches
    /// in hand are still sent meanwhile).
    lease: (Stopper, JoinHandle<Option<()>>),
    /// The journey's writer (stopped with the lease, so the lanes' last steps are written), and
    /// its pruning, counts and the socket its local store is read on.
    journey: (JoinHandle<Option<()>>, JoinHandle<Option<()>>),
    ledger: Arc<Ledger>,
    lanes: Arc<Lanes>,
    link: Arc<BrokerLink>,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let registry = Registry::new();
        let metrics = DeliverMetrics::new(&registry);
        let postgres = Postgres::reporting(settings.postgres_timeout, bridge_shared::telemetry::postgres_up(&registry));
        let integrations =
            IntegrationsHandle::open(&Location::of(&settings), ReloadMetrics::new(&registry), &postgres).await?;
        let ledger = Arc::new(open_ledger(&settings, &postgres).await?);
        let topology = Topology::new(&settings.amqp.topology_prefix);
        let link = BrokerLink::new(metrics.amqp.connected.clone(), metrics.amqp.node.clone());
        let (journal, writer, journey_store) =
            open_journal(&settings, &postgres, &ledger, &registry, &integrations).await?;
        let (intake, lanes) =
            pipeline(&settings, &registry, &metrics, &link, &integrations, (&ledger, &journal), &topology);
        let d = &settings.deliver;
        let ready = Arc::new(AtomicBool::new(false));
        let consuming = Consuming {
            link: link.clone(),
            connect_failures: metrics.amqp.connect_failures.clone(),
            ready: ready.clone(),
        };
        let stopper = Stopper::default();
        let stop = stopper.listener();
        let liveness = Liveness::default();
        let session = settings.amqp.session(topology, "verbox-bridge deliver", metrics.amqp.connect_failures.clone());
        // The envelope around a body: a few fields, the payload embedded as is; with a margin.
        let largest_event = settings.ingest.max_body_bytes as u64 * 6 / 5 + 1024;
        let windows = Windows::within(d.prefetch_bytes, largest_event, d.prefetch);
        let consumer_stop = stop.clone();
        let consumer = liveness
            .spawn("consumer", &stop, async move { consuming.run(intake, session, windows, consumer_stop).await });
        let pruner = liveness.spawn(
            "ledger pruner",
            &stop,
            ledger.clone().prune_periodically(settings.deliver.ledger_keep, LEDGER_PRUNE_EVERY, stop.clone()),
        );
        let watcher =
            liveness.spawn("integrations watcher", &stop, integrations.watch(Duration::from_secs(2), stop.clone()));
        let lease_stopper = Stopper::default();
        let lease = liveness.spawn("ledger lease", &stop, ledger.clone().hold_lease(lease_stopper.listener()));
        let journal_writer =
            liveness.spawn("journey writer", &stop, journal.clone().work(writer, lease_stopper.listener()));
        let lease = (lease_stopper, lease);
        let socket = journey_store.map(|store| serve_socket(store, socket_path(&d.ledger_dir), stop.clone()));
        let upkeep = journal.upkeep(d.journey_keep, d.journey_lost_after, LEDGER_PRUNE_EVERY, stop.clone());
        let socket_stop = stop.clone();
        let journey_upkeep = liveness.spawn("journey upkeep", &stop, async move {
            let socket = async move {
                match socket {
                    Some(socket) => socket.await,
                    None => socket_stop.stopped().await,
                }
            };
            tokio::join!(upkeep, socket);
        });

        let state = web::Data::new(HealthState { registry, ready, liveness, link: link.clone(), postgres });
        let (listener, port) = bind(LISTEN, d.listen)?;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics_page))
        })
        .workers(1)
        .shutdown_timeout(5)
        .listen(listener)
        .map_err(StartError::bind(LISTEN))?
        .run();
        tracing::info!(port, "deliver listening");
        let served = Served::new(port, server);
        let journey = (journal_writer, journey_upkeep);
        Ok(Application { served, stopper, consumer, watcher, pruner, lease, journey, ledger, lanes, link })
    }
}

/// The pipeline an event goes through once consumed: intake → lanes → courier → outlet.
fn pipeline(
    settings: &Settings,
    registry: &Registry,
    metrics: &DeliverMetrics,
    link: &BrokerLink,
    integrations: &IntegrationsHandle,
    (ledger, journal): (&Arc<Ledger>, &Arc<Journal>),
    topology: &Topology,
) -> (Arc<Intake>, Arc<Lanes>) {
    let outlet = Arc::new(Outlet {
        publisher: link.publishers(),
        topology: topology.clone(),
        ledger: ledger.clone(),
        metrics: metrics.clone(),
        acks: Acks::new(metrics.ack_frames.clone()),
        retry_for: settings.deliver.retry_for,
        park_for: settings.deliver.park_for,
        move_warnings: RetryWarnings::default(),
        journal: journal.clone(),
    });
    let courier = Arc::new(Courier {
        client: ComagicClient::new(settings.deliver.comagic_timeout, ComagicMetrics::new(registry)),
        calls: Slots::new(settings.deliver.concurrency),
        integrations: integrations.clone(),
        tenants: Tenants::new((settings.deliver.pause_initial, settings.deliver.pause_max), metrics.clone()),
        outlet: outlet.clone(),
        doubt_grace: settings.deliver.doubt_grace(),
        panics: Panics::default(),
    });
    let d = &settings.deliver;
    let limits = LaneLimits { batch_max: d.batch_max, linger: d.batch_linger, max_lag: MAX_LANE_LAG };
    let lanes = Arc::new(Lanes::new(courier, d.concurrency, limits));
    let intake = Arc::new(Intake { integrations: integrations.clone(), outlet, lanes: lanes.clone() });
    (intake, lanes)
}

impl Service for Application {
    fn served(&self) -> &Served {
        &self.served
    }

    /// Runs until SIGTERM/SIGINT (or [`Served::handle`]`.stop`): stops consuming, lets the lanes send
    /// or move what they hold, lets the ledger lease lapse once they have, then closes the
    /// connection; anything still unacked is redelivered.
    async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.served.stopped().await;
        self.stopper.stop();
        let connection = self.consumer.await.ok().flatten().flatten();
        let settled = tokio::time::timeout(LANES_SHUTDOWN, self.lanes.close()).await.is_ok();
        let (lease_stopper, lease) = self.lease;
        lease_stopper.stop();
        let _ = lease.await;
        // The journey's last steps, for a few seconds at most: a database that does not answer
        // must not hold up the rest of the stop (the steps are lost, the events are not).
        let (journal_writer, journey_upkeep) = self.journey;
        if tokio::time::timeout(JOURNEY_SHUTDOWN, journal_writer).await.is_err() {
            tracing::warn!("the journey's last steps were not all written before the stop");
        }
        let _ = tokio::time::timeout(JOURNEY_SHUTDOWN, journey_upkeep).await;
        if settled {
            // Nothing is in hand: what this process still claims may be taken over at once.
            self.ledger.let_lease_lapse().await;
        } else {
            // A batch may still be calling: its claims hold until the lease lapses by itself.
            tracing::warn!("batches still in hand at shutdown; the broker redelivers them");
        }
        if let Some(connection) = connection {
            self.link.close(&connection).await;
        }
        let _ = self.watcher.await;
        // A prune in progress finishes on the blocking pool; the task itself returns at once.
        let _ = self.pruner.await;
        tracing::info!("deliver stopped");
        served
    }
}

async fn healthz(state: web::Data<HealthState>) -> HttpResponse {
    match state.liveness.health() {
        (true, body) => HttpResponse::Ok().json(body),
        (false, body) => HttpResponse::ServiceUnavailable().json(body),
    }
}

/// Not ready while not consuming, or while the ledger does not answer (nothing can be claimed,
/// so nothing is sent). The integrations store does not count: deliver goes on with the last
/// good set, and the body says the store is away.
async fn readyz(state: web::Data<HealthState>) -> HttpResponse {
    let down = state.postgres.down();
    let away: Vec<String> = down.iter().map(|role| format!("the {} database does not answer", role.as_str())).collect();
    if !state.ready.load(Ordering::Relaxed) {
        HttpResponse::ServiceUnavailable().json(json!({"status": "unavailable", "reason": "not consuming"}))
    } else if down.contains(&Role::Ledger) {
        HttpResponse::ServiceUnavailable().json(json!({"status": "unavailable", "reason": away.join("; ")}))
    } else if !away.is_empty() {
        HttpResponse::Ok().json(json!({"status": "ready", "broker": state.link.node(), "degraded": away}))
    } else {
        HttpResponse::Ok().json(json!({"status": "ready", "broker": state.link.node()}))
    }
}

async fn metrics_page(state: web::Data<HealthState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(bridge_shared::telemetry::METRICS_CONTENT_TYPE)
        .body(telemetry::render(&state.registry))
}
