//! Test support for verbox-bridge: the CoMagic sandbox, the benchmarks' load generator, and the helpers every test binary shares
//! (a per-test broker topology, a cuttable TCP proxy, waiting for a condition, webhook fixtures).

pub mod bench;
pub mod broker;
pub mod config;
pub mod dashboard;
pub mod fixtures;
pub mod prometheus;
pub mod proxy;
pub mod running;
pub mod sandbox;
pub mod wait;

pub use wait::wait_for;

/// The PostgreSQL database the tests use: `scripts/ensure-postgres.sh` creates it
/// (`BRIDGE_TEST_POSTGRES_URL` points elsewhere).
pub fn postgres_url() -> String {
    std::env::var("BRIDGE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://bridge:bridge@127.0.0.1:5432/bridge_test".into())
}
