//! The drill's figures, printed whether it passed or not: what was posted, answered, stored, stored
//! twice, missing and dead-lettered, the faults set off per kind, and the latency from ingest's
//! 200 to CoMagic storing the chat (a figure, not an assertion). When something was stored twice
//! or never, what the deliver replicas logged about those events, and where their logs were kept.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::schedule::KINDS;

pub struct Summary {
    pub seed: u64,
    pub seconds: u64,
    pub webhooks: u64,
    pub answered: usize,
    pub other_answers: u64,
    pub resent: u64,
    pub stored: usize,
    pub twice: usize,
    pub missing: usize,
    pub dead: u32,
    pub applied: [usize; KINDS.len()],
    /// From the 200 to the sandbox storing it, for each chat answered 200 and stored.
    pub latencies: Vec<Duration>,
    /// From the end of the load until everything was stored and settled.
    pub drained: Duration,
}

impl Summary {
    pub fn print(&self) {
        let mut latencies = self.latencies.clone();
        latencies.sort();
        let at = |share: f64| format!("{:.1} s", percentile(&latencies, share).as_secs_f64());
        let faults: Vec<String> = KINDS.iter().zip(self.applied).map(|(k, n)| format!("{k} {n}")).collect();
        let rows = [
            ("seed", self.seed.to_string()),
            ("load", format!("{} s, {} webhooks/s", self.seconds, self.webhooks / self.seconds.max(1))),
            ("webhooks", self.webhooks.to_string()),
            ("answered 200", self.answered.to_string()),
            ("other answers", self.other_answers.to_string()),
            ("sent again to the other ingest", self.resent.to_string()),
            ("stored", self.stored.to_string()),
            ("stored twice", self.twice.to_string()),
            ("answered 200, never stored", self.missing.to_string()),
            ("dead-lettered", self.dead.to_string()),
            ("faults set off", faults.join(", ")),
            ("drained after the load", format!("{:.1} s", self.drained.as_secs_f64())),
            ("200 → stored, median", at(0.50)),
            ("200 → stored, p90", at(0.90)),
            ("200 → stored, p99", at(0.99)),
            ("200 → stored, max", at(1.0)),
        ];
        println!("\nchaos drill summary\n| | |\n|---|---|");
        for (what, value) in rows {
            println!("| {what} | {value} |");
        }
    }
}

/// The nearest-rank percentile of `sorted` (`share` 0.5 the median, 1.0 the largest); zero when
/// empty.
pub fn percentile(sorted: &[Duration], share: f64) -> Duration {
    let rank = (share * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied().unwrap_or_default()
}

/// Prints what the deliver logs in `dir` say about each of `ids` (at most `LINES` lines each) and
/// copies the logs to a directory of the run's own that outlives the test's; returns it.
pub fn explain(dir: &Path, seed: u64, ids: &[&str]) -> PathBuf {
    const LINES: usize = 12;
    let kept = std::env::temp_dir().join(format!("verbox-chaos-{seed}"));
    std::fs::create_dir_all(&kept).expect("a directory for the drill's logs");
    let mut logs = Vec::new();
    for entry in std::fs::read_dir(dir).expect("the test's directory").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("deliver-") && name.ends_with(".log") {
            std::fs::copy(entry.path(), kept.join(&name)).expect("a deliver log copied");
            logs.push((name, std::fs::read_to_string(entry.path()).unwrap_or_default()));
        }
    }
    for id in ids {
        println!("\n{id}:");
        let mut lines: Vec<(&String, &str)> = logs
            .iter()
            .flat_map(|(name, log)| log.lines().filter(|l| l.contains(id)).map(move |l| (name, l)))
            .collect();
        // Each line starts with its timestamp: in order of time over every replica's log.
        lines.sort_by_key(|(_, line)| *line);
        for (name, line) in lines.into_iter().take(LINES) {
            println!("  {name}: {line}");
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_by_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_secs).collect();
        assert_eq!(percentile(&sorted, 0.5), Duration::from_secs(50));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_secs(99));
        assert_eq!(percentile(&sorted, 1.0), Duration::from_secs(100));
        assert_eq!(percentile(&sorted[..1], 0.5), Duration::from_secs(1));
        assert_eq!(percentile(&[], 0.99), Duration::ZERO);
    }
}
