//! The webhook receiver: validates Verbox webhooks and answers only once each event is durable in
//! RabbitMQ (publisher confirms) or, while the broker is down, in the local spool.

pub mod drain;
pub mod error;
pub mod refusals;
pub mod routes;
pub mod sink;
pub mod spool;
pub mod startup;
pub mod state;
