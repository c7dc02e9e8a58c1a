//! End-to-end: webhooks posted to ingest arrive at the CoMagic sandbox through RabbitMQ and deliver.

mod attribution;
mod blackhole;
mod chaos;
mod check;
mod cluster;
mod console;
mod copies;
mod crashes;
mod dlq;
mod doubt;
mod drill;
mod faults;
mod helpers;
mod isolation;
mod journeys;
mod lifecycle;
mod live;
mod nodes;
mod panics;
mod rolling;
mod store;
