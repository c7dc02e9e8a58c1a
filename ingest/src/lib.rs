//! The webhook receiver: validates Verbox webhooks and answers only once each event is durable in
//! RabbitMQ (publisher confirms) or, while the broker is down, in the local spool.

pub mod cli;
pub(crate) mod drain;
pub(crate) mod error;
pub(crate) mod refusals;
pub(crate) mod routes;
pub(crate) mod sink;
pub(crate) mod spool;
pub mod startup;
pub(crate) mod state;
