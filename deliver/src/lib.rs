//! deliver: consumes accepted Verbox events, attributes and maps them, and uploads them to CoMagic in
//! per-tenant batches with retries, pauses and dead letters (CONTRACT.md).

pub mod courier;
pub mod intake;
pub mod lanes;
pub mod ledger;
pub mod outlet;
pub mod pending;
pub mod startup;
pub mod tenants;
