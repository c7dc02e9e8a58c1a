mod health;
mod webhook;

pub use health::{healthz, metrics, not_found, readyz};
pub use webhook::webhook;
