//! `ingest drain-spool`: publishes every event of a spool directory to the broker and exits. For
//! a spool a replica left behind (its volume mounted or copied here after it was scaled down for
//! good while the broker was unreachable); a running ingest drains its own spool by itself.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bridge_shared::amqp::{until_stopped, BrokerLink, Topology};
use bridge_shared::lifecycle::Stopper;
use bridge_shared::settings::Settings;
use bridge_shared::telemetry::IngestMetrics;
use prometheus::Registry;

use crate::spool::{Spool, SpoolError};

/// How a drain ended: events published, and events still in the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub published: usize,
    pub left: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// Refused before anything is opened: opening creates a spool, and a mistyped path would be
    /// drained as an empty one ("published 0", exit 0) while the real spool waits elsewhere.
    #[error("no spool here: {0}; check --spool-dir (or `[ingest] spool_dir`)")]
    NoSpool(&'static str),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Whether `dir` holds a spool: sled's two files, which a replica's spool always has.
fn holds_a_spool(dir: &Path) -> Result<(), DrainError> {
    if !dir.is_dir() {
        return Err(DrainError::NoSpool(if dir.exists() { "not a directory" } else { "the directory does not exist" }));
    }
    if !(dir.join("conf").is_file() && dir.join("db").is_file()) {
        return Err(DrainError::NoSpool("the directory holds no spool (no sled `conf` and `db` files)"));
    }
    Ok(())
}

/// Drains the spool in `dir` to the broker of `settings`, giving up after `deadline`. A directory
/// that holds no spool is refused, never created.
pub async fn drain_spool(settings: &Settings, dir: &Path, deadline: Duration) -> Result<Drained, DrainError> {
    holds_a_spool(dir)?;
    let metrics = IngestMetrics::new(&Registry::new());
    // No cap: the spool only shrinks here.
    let spool = Arc::new(Spool::open(dir, u64::MAX, metrics.clone())?);
    let before = spool.len();
    if before == 0 {
        return Ok(Drained { published: 0, left: 0 });
    }
    let link = BrokerLink::new(metrics.amqp.connected.clone(), metrics.amqp.node.clone());
    let topology = Topology::new(&settings.amqp.topology_prefix);
    let stopper = Stopper::default();
    let stop = stopper.listener();
    let session =
        settings.amqp.session(topology.clone(), "verbox-bridge ingest drain-spool", metrics.amqp.connect_failures);
    let serve = until_stopped(stop.clone());
    let supervisor = tokio::spawn(link.clone().supervise(session, stop.clone(), serve));
    let drain = tokio::spawn(spool.clone().drain(link.clone(), topology.events_exchange(), stop));
    spool.emptied(deadline).await;
    stopper.stop();
    let _ = drain.await;
    if let Ok(Some(connection)) = supervisor.await {
        link.close(&connection).await;
    }
    spool.flush().await;
    let left = spool.len();
    Ok(Drained { published: before.saturating_sub(left), left })
}
