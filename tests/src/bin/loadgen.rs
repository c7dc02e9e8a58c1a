//! `loadgen ingest ...`: the load generator behind `scripts/bench.sh`. Targets 127.0.0.1 only.

use std::path::PathBuf;

use bridge_tests::bench::busy::{self, BusyBench};
use bridge_tests::bench::deliver::{self, DeliverBench};
use bridge_tests::bench::ingest::{self, IngestBench};
use bridge_tests::bench::integrations::{self, IntegrationsBench};
use bridge_tests::bench::scale::{self, ScaleBench};
use bridge_tests::bench::sibling;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Load generator for the verbox-bridge benchmarks (prints a table)")]
struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Webhooks/s and latency through a real ingest process beside the broker's raw confirmed rate.
    Ingest {
        /// The release `ingest` binary to start.
        #[arg(long, default_value_os_t = sibling("ingest"))]
        ingest_bin: PathBuf,
        #[arg(long, env = "BRIDGE_TEST_AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
        amqp_url: String,
        /// Requests (and publishes) in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Seconds per run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Turns of (raw, ingest) at full speed; the medians are reported.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
        rounds: u64,
        #[arg(long, default_value_t = 2048)]
        payload_bytes: usize,
        /// Confirm-mode channels, for ingest and for the raw run alike.
        #[arg(long, default_value_t = 4)]
        channels: usize,
        /// ingest's `[ingest] workers` (0: one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
    },
    /// Events/s a real deliver process drains into the sandbox, items per call and RSS.
    Deliver {
        #[arg(long, default_value_os_t = sibling("deliver"))]
        deliver_bin: PathBuf,
        #[arg(long, env = "BRIDGE_TEST_AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
        amqp_url: String,
        #[arg(long, default_value_t = 30_000)]
        events: u64,
        /// CoMagic latencies to run at, in ms.
        #[arg(long, value_delimiter = ',', default_value = "0,50")]
        latency_ms: Vec<u64>,
        /// deliver's `[deliver] concurrency`.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Pad each webhook to about this many bytes (e.g. 1048576 for the memory bound); 0 keeps
        /// the 2 KB dialog.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=16 << 20))]
        webhook_bytes: u64,
        /// Runs of each latency with the journey off and on, alternated.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Events/s with 1, 2 and 3 deliver replicas on the local 3-node cluster, and the delivery gap
    /// when the deliver queue's leader node is killed (`scripts/bench.sh scale` sets it up).
    Scale(ScaleBench),
    /// ingest and deliver throughput with 10 and 1,000 integrations in each store, and how long a
    /// change takes to reach both.
    Integrations(IntegrationsBench),
    /// deliver's CPU while 1,000 busy integrations' lanes wait for call slots (CoMagic at 50 ms),
    /// per binary given (`--deliver old=PATH,new=PATH` alternates them).
    Busy(BusyBench),
}

#[tokio::main]
async fn main() {
    match Args::parse().bench {
        Bench::Ingest { ingest_bin, amqp_url, concurrency, seconds, rounds, payload_bytes, channels, workers } => {
            let bench =
                IngestBench { ingest_bin, amqp_url, concurrency, seconds, rounds, payload_bytes, channels, workers };
            ingest::run(bench).await
        }
        Bench::Deliver { deliver_bin, amqp_url, events, latency_ms, concurrency, webhook_bytes, rounds } => {
            let (latencies_ms, webhook_bytes) = (latency_ms, webhook_bytes as usize);
            let bench =
                DeliverBench { deliver_bin, amqp_url, events, latencies_ms, concurrency, webhook_bytes, rounds };
            deliver::run(bench).await
        }
        Bench::Scale(bench) => scale::run(bench).await,
        Bench::Integrations(bench) => integrations::run(bench).await,
        Bench::Busy(bench) => busy::run(bench).await,
    }
}
