//! End-to-end: webhooks posted to ingest arrive at the CoMagic sandbox through RabbitMQ and deliver.

mod attribution;
mod crashes;
mod faults;
mod helpers;
