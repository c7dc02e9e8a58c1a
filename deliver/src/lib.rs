//! deliver: consumes accepted Verbox events, attributes and maps them, and uploads them to CoMagic in
//! per-tenant batches with retries, pauses and dead letters (docs/delivery.md); and the operator
//! commands that come with it (`dlq`, `check`, `console`).
//!
//! The pipeline, in the order an event goes through it:
//!
//! ```text
//! bridge.deliver ─▶ intake ─▶ lanes ─▶ courier ─▶ CoMagic
//!                   (check,   (batch   (claim in the ledger, call, act on the outcome)
//!                   attribute, per          │
//!                   map)      integration)  ▼
//!                                         outlet ─▶ acks (delivered) · retry queues · dead letters
//! ```
//!
//! - `intake`: consumes the queue; each message checked, attributed and mapped, then handed to
//!   its integration's lane (`pending` is one such event).
//! - `lanes`: one per integration and kind; batches, flushed when full or lingered, sent when a
//!   call slot (`slots`) and the tenant's allowance are free.
//! - `courier`: one batch, one call: claims in the `ledger` first, then CoMagic, then each
//!   outcome; pauses and quota per tenant live in `tenants`.
//! - `outlet`: where each message ends: ledger then ack (`acks` coalesces them), a retry
//!   queue, or the dead-letter queue, each published with a confirm before the ack.
//! - Around it: `startup` wires it; `cli` the commands; `dlq`, `check` and `console`
//!   are the operators' and tenants' tools.

pub(crate) mod acks;
pub(crate) mod check;
pub mod cli;
pub mod console;
pub(crate) mod courier;
pub(crate) mod dlq;
pub(crate) mod intake;
pub mod journey;
pub(crate) mod lanes;
pub(crate) mod ledger;
pub(crate) mod outlet;
pub(crate) mod pending;
pub(crate) mod slots;
pub mod startup;
mod table;
pub(crate) mod tenants;
