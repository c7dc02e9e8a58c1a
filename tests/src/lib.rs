//! Test support for verbox-bridge: the CoMagic sandbox, the benchmarks' load generator, and the helpers every test binary shares
//! (a per-test broker topology, a cuttable TCP proxy, waiting for a condition, webhook fixtures).

pub mod bench;
pub mod broker;
pub mod fixtures;
pub mod proxy;
pub mod sandbox;
pub mod wait;

pub use wait::wait_for;
