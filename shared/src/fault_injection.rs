//! Faults the end-to-end tests set off inside deliver, compiled only with the `fault-injection`
//! feature (deliver's tests turn it on; a release build never has it): what is proved against them
//! is what a real bug of that kind would cost.

use crate::mapping::Item;

/// Set in a chat's visitor name, it makes asking CoMagic's report about that chat panic.
pub const PANIC_IN_REPORT: &str = "fault-injection: panic in the report path";

/// Panics when one of `items` carries [`PANIC_IN_REPORT`].
pub fn panic_if_marked(items: &[&Item]) {
    let marked = items.iter().any(|i| serde_json::to_string(i).is_ok_and(|json| json.contains(PANIC_IN_REPORT)));
    assert!(!marked, "{PANIC_IN_REPORT}");
}
