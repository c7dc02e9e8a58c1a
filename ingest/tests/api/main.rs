//! Ingest against a real RabbitMQ over real HTTP: one test binary, a module per area.

mod drain;
mod helpers;
mod outage;
mod process;
mod setup;
mod spool;
mod webhook;
