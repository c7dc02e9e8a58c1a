//! Helpers shared by the test modules.

use std::time::Duration;

use bridge_shared::comagic::ComagicClient;
use bridge_shared::telemetry::ComagicMetrics;

/// A client with its own registry, so tests running in parallel do not share counters.
pub fn comagic_client(timeout: Duration) -> (ComagicClient, prometheus::Registry) {
    let registry = prometheus::Registry::new();
    (ComagicClient::new(timeout, ComagicMetrics::new(&registry)), registry)
}
