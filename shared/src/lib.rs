//! The domain core shared by `ingest` and `deliver`: Verbox parsing, event ids and envelopes,
//! settings and integrations, attribution, mapping to CoMagic items, the CoMagic client, the
//! RabbitMQ topology and publisher, retry policy and telemetry.

pub mod amqp;
pub mod attribution;
pub mod comagic;
pub mod disk;
pub mod event;
#[cfg(feature = "fault-injection")]
pub mod fault_injection;
pub mod integrations;
pub mod journey_metrics;
pub mod lifecycle;
pub mod mapping;
pub mod postgres;
pub mod redact;
pub mod reload;
pub mod retry_policy;
pub mod secret;
pub mod service;
pub mod settings;
pub mod setup;
pub mod telemetry;
pub mod trace;
pub mod verbox;
