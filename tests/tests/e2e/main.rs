//! End-to-end and integration tests: one binary, a module per area, shared helpers in `helpers`.

mod comagic;
mod deploy;
mod helpers;
mod postgres;
mod topology;
