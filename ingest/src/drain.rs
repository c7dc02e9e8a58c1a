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

/// Drains `dir` to the broker of `settings`, giving up after `deadline`.
pub async fn drain_spool(settings: &Settings, dir: &Path, deadline: Duration) -> Result<Drained, SpoolError> {
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
