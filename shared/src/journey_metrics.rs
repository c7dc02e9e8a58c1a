//! The metrics of deliver's journey (deliver/src/journey): here, beside the others, so the list
//! of what the services export (`telemetry::exported_metric_names`, which the dashboard's and the
//! alerts' tests read) has them too.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct JourneyMetrics {
    /// Steps not kept, by why (`queue_full`, `write_failed`, `merge_conflict`).
    pub dropped: IntCounterVec,
    /// Events on their way longer than `journey_lost_after`, not waiting on purpose, per integration.
    pub lost: IntGaugeVec,
}

impl JourneyMetrics {
    pub fn new(registry: &Registry) -> Self {
        let dropped = IntCounterVec::new(
            Opts::new("bridge_journey_steps_dropped_total", "Journey steps not kept, by why"),
            &["reason"],
        )
        .expect("valid metric");
        let lost = IntGaugeVec::new(
            Opts::new(
                "bridge_journey_lost",
                "Events neither delivered nor dead-lettered journey_lost_after after ingest took them (not paused or waiting for quota)",
            ),
            &["integration"],
        )
        .expect("valid metric");
        registry.register(Box::new(dropped.clone())).expect("registered once");
        registry.register(Box::new(lost.clone())).expect("registered once");
        JourneyMetrics { dropped, lost }
    }
}
