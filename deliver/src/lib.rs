//! deliver: consumes accepted Verbox events, attributes and maps them, and uploads them to CoMagic in
//! per-tenant batches with retries, pauses and dead letters (docs/delivery.md); and the operator
//! commands that come with it (`dlq`, `check`).

pub mod acks;
pub mod check;
pub mod cli;
pub mod console;
pub mod courier;
pub mod dlq;
pub mod intake;
pub mod lanes;
pub mod ledger;
pub mod outlet;
pub mod pending;
pub mod slots;
pub mod startup;
mod table;
pub mod tenants;
