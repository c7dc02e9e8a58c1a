//! What every request handler can reach: built by `startup`, read by `routes`.

use bridge_shared::lifecycle::Liveness;
use bridge_shared::reload::IntegrationsHandle;
use bridge_shared::telemetry::IngestMetrics;
use prometheus::Registry;

use crate::refusals::RefusalLog;
use crate::sink::EventSink;

/// What every request handler can reach.
pub struct AppState {
    pub integrations: IntegrationsHandle,
    pub sink: EventSink,
    pub metrics: IngestMetrics,
    pub registry: Registry,
    pub max_body_bytes: usize,
    pub liveness: Liveness,
    pub refusals: RefusalLog,
    /// Accepted webhooks with message times out of range: logged as refusals are, at most once
    /// per integration per minute.
    pub times_out_of_range: RefusalLog,
}
