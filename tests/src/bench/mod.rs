//! What the load generator measures with: latency percentiles, a process's memory, and a table.

pub mod busy;
pub mod deliver;
mod http;
pub mod ingest;
pub mod integrations;
pub mod scale;

use std::path::PathBuf;
use std::time::Duration;

/// A binary built beside the load generator (the same `target/release`, whatever
/// `CARGO_TARGET_DIR` says): the default of every `--*-bin`.
pub fn sibling(name: &str) -> PathBuf {
    let dir = std::env::current_exe().ok().and_then(|exe| exe.parent().map(PathBuf::from));
    dir.unwrap_or_else(|| PathBuf::from("target/release")).join(name)
}

/// Sorted latencies of one run.
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Latencies(samples)
    }

    /// The `p`-th percentile (0–100) in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * (self.0.len() - 1) as f64).round() as usize;
        self.0[rank].as_secs_f64() * 1000.0
    }
}

/// Peak and current resident memory of a process, in MiB (`VmHWM`, `VmRSS` of /proc/PID/status).
pub fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// CPU time a process has used so far, user and system, in seconds (/proc/PID/stat).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(f64::NAN);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; Linux counts
    // them in USER_HZ, 100 per second on every architecture it exports to user space.
    (ticks(11) + ticks(12)) / 100.0
}

/// `n` distinct free loopback addresses for processes the benchmark starts: every port is picked
/// before any is let go, as the kernel may hand a port it was just given back again.
pub fn free_addresses(n: usize) -> Vec<std::net::SocketAddr> {
    let picked: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port")).collect();
    picked.iter().map(|l| l.local_addr().expect("a bound address")).collect()
}

/// A plain-text table: a header row and rows of cells, columns padded to fit (in characters, as
/// `format!` pads: a header may hold a µ).
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([header[i].chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("| {} |", padded.join(" | "));
    };
    line(header.to_vec());
    println!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|"));
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_ranked_sample() {
        let l = Latencies::new((1..=100).rev().map(Duration::from_millis).collect());
        assert_eq!(l.percentile_ms(50.0), 51.0);
        assert_eq!(l.percentile_ms(99.0), 99.0);
        assert_eq!(l.percentile_ms(100.0), 100.0);
        assert!(Latencies::new(vec![]).percentile_ms(50.0).is_nan());
    }
}
