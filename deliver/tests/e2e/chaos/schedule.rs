//! The drill's schedule, a pure function of (seed, duration): a failing run is replayed from the
//! seed it printed. Faults come in four lanes that run side by side, each one fault at a time: a
//! broker node (so two of three nodes always keep the quorum), a deliver replica and an ingest
//! replica (so the other one carries on), and CoMagic (one misbehaviour at a time: a second would
//! end the first's). Every fault ends before the load does, with a quiet tail to drain in.

use std::time::Duration;

/// How long CoMagic hangs: well past the tests' `comagic_timeout` (10 s), so calls time out.
pub const HANG: Duration = Duration::from_secs(40);
/// How late CoMagic answers while it is slow: late, yet within `comagic_timeout`.
pub const SLOW: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Broker node 1-3 SIGKILLed, started again when the fault ends.
    NodeKilled(u8),
    /// Deliver replica 0 or 1 SIGKILLed, started again when the fault ends.
    DeliverKilled(usize),
    /// Ingest replica 0 or 1 stopped, the load sent to the other meanwhile; started again.
    IngestStopped(usize),
    /// CoMagic answers every call with HTTP 500.
    Comagic500,
    /// CoMagic carries every call out, then its answer is lost (HTTP 502).
    AnswersLost,
    /// CoMagic answers every call [`SLOW`] late.
    Slow,
    /// CoMagic answers no call; each hangs until the client gives up.
    Hang,
}

/// What CoMagic does in the CoMagic lane, cycled through in an order shuffled per cycle.
const COMAGIC: [Fault; 4] = [Fault::Comagic500, Fault::AnswersLost, Fault::Slow, Fault::Hang];

/// Every kind of fault, in the order the summary lists them.
pub const KINDS: [&str; 7] =
    ["node killed", "deliver killed", "ingest stopped", "CoMagic 500", "answers lost", "CoMagic slow", "CoMagic hangs"];

impl Fault {
    /// Its kind, whatever node or replica it hits: one of [`KINDS`].
    pub fn kind(self) -> &'static str {
        let index = match self {
            Fault::NodeKilled(_) => 0,
            Fault::DeliverKilled(_) => 1,
            Fault::IngestStopped(_) => 2,
            Fault::Comagic500 => 3,
            Fault::AnswersLost => 4,
            Fault::Slow => 5,
            Fault::Hang => 6,
        };
        KINDS[index]
    }

    /// How long it may last, in milliseconds (least, most).
    fn lasts_ms(self) -> (u64, u64) {
        match self {
            Fault::NodeKilled(_) => (10_000, 30_000),
            Fault::DeliverKilled(_) | Fault::IngestStopped(_) | Fault::Comagic500 | Fault::AnswersLost => {
                (5_000, 20_000)
            }
            Fault::Slow => (10_000, 30_000),
            Fault::Hang => (HANG.as_millis() as u64, HANG.as_millis() as u64),
        }
    }
}

/// One fault of the schedule: from `at` after the load starts, for `lasts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub at: Duration,
    pub fault: Fault,
    pub lasts: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Broker,
    Deliver,
    Ingest,
    Comagic,
}

impl Lane {
    pub const ALL: [Lane; 4] = [Lane::Broker, Lane::Deliver, Lane::Ingest, Lane::Comagic];

    /// The quiet time after one of its faults, in milliseconds (least, most). After CoMagic's, a
    /// minute at least: what it sent to the 1 min retry tier comes back to a CoMagic that answers,
    /// rather than failing a third time into the 10 min tier.
    fn quiet_ms(self) -> (u64, u64) {
        match self {
            Lane::Broker => (20_000, 60_000),
            Lane::Deliver => (30_000, 90_000),
            Lane::Ingest => (20_000, 60_000),
            Lane::Comagic => (60_000, 90_000),
        }
    }
}

impl Fault {
    pub fn lane(self) -> Lane {
        match self {
            Fault::NodeKilled(_) => Lane::Broker,
            Fault::DeliverKilled(_) => Lane::Deliver,
            Fault::IngestStopped(_) => Lane::Ingest,
            Fault::Comagic500 | Fault::AnswersLost | Fault::Slow | Fault::Hang => Lane::Comagic,
        }
    }
}

/// xorshift64*, seeded through splitmix64 (any seed, 0 included): enough for a schedule, and no
/// crate for it.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)).max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `least..=most`.
    fn between(&mut self, (least, most): (u64, u64)) -> u64 {
        least + self.next() % (most - least + 1)
    }
}

/// The faults of one lane, in order.
struct LaneFaults<'a> {
    lane: Lane,
    rng: &'a mut Rng,
    comagic: Vec<Fault>,
}

impl LaneFaults<'_> {
    fn next(&mut self) -> Fault {
        match self.lane {
            Lane::Broker => Fault::NodeKilled(self.rng.between((1, 3)) as u8),
            Lane::Deliver => Fault::DeliverKilled(self.rng.between((0, 1)) as usize),
            Lane::Ingest => Fault::IngestStopped(self.rng.between((0, 1)) as usize),
            Lane::Comagic => {
                if self.comagic.is_empty() {
                    // A new cycle in a new order (Fisher-Yates): each kind comes once a cycle.
                    self.comagic = COMAGIC.to_vec();
                    for i in (1..self.comagic.len()).rev() {
                        self.comagic.swap(i, self.rng.between((0, i as u64)) as usize);
                    }
                }
                self.comagic.pop().expect("a cycle was just filled")
            }
        }
    }
}

/// When the last fault must have ended: a sixth of the run (at least 15 s) is left quiet, for
/// what the faults sent to the retry tiers to come back while the load still runs.
pub fn faults_end(duration: Duration) -> Duration {
    duration.saturating_sub((duration / 6).max(Duration::from_secs(15)))
}

/// The faults for a run of `duration` from `seed`, ordered by when they start.
pub fn schedule(seed: u64, duration: Duration) -> Vec<Planned> {
    let mut rng = Rng::new(seed);
    let end = faults_end(duration);
    let mut planned = Vec::new();
    for lane in Lane::ALL {
        let mut faults = LaneFaults { lane, rng: &mut rng, comagic: Vec::new() };
        // The first fault of each lane 5-15 s in: the load runs steadily before anything fails.
        let mut at = Duration::from_millis(faults.rng.between((5_000, 15_000)));
        loop {
            let fault = faults.next();
            let lasts = Duration::from_millis(faults.rng.between(fault.lasts_ms()));
            if at + lasts > end {
                break;
            }
            planned.push(Planned { at, fault, lasts });
            at += lasts + Duration::from_millis(faults.rng.between(lane.quiet_ms()));
        }
    }
    planned.sort_by_key(|p| p.at);
    planned
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_MINUTES: Duration = Duration::from_secs(600);

    #[test]
    fn a_seed_and_a_duration_always_give_the_same_schedule_and_another_seed_another() {
        for seed in [0, 1, 42, u64::MAX] {
            assert_eq!(schedule(seed, TEN_MINUTES), schedule(seed, TEN_MINUTES), "seed {seed}");
        }
        assert_ne!(schedule(1, TEN_MINUTES), schedule(2, TEN_MINUTES));
        assert_ne!(schedule(1, TEN_MINUTES), schedule(1, Duration::from_secs(300)));
    }

    #[test]
    fn every_kind_of_fault_appears_in_a_ten_minute_schedule_and_every_node_is_killed_in_some() {
        for seed in 0..200 {
            let plan = schedule(seed, TEN_MINUTES);
            for kind in KINDS {
                assert!(plan.iter().any(|p| p.fault.kind() == kind), "seed {seed}: no {kind} in {plan:?}");
            }
        }
        let plans: Vec<_> = (0..20).map(|seed| schedule(seed, TEN_MINUTES)).collect();
        for node in 1..=3 {
            let killed = plans.iter().flatten().any(|p| p.fault == Fault::NodeKilled(node));
            assert!(killed, "node {node} is killed in some schedule");
        }
    }

    #[test]
    fn faults_of_a_lane_never_overlap_and_all_end_before_the_quiet_tail() {
        for seed in 0..200 {
            for duration in [Duration::from_secs(90), TEN_MINUTES] {
                let plan = schedule(seed, duration);
                assert!(!plan.is_empty(), "seed {seed}: a {duration:?} run has faults");
                assert!(plan.windows(2).all(|w| w[0].at <= w[1].at), "ordered by start");
                assert!(plan.iter().all(|p| p.at + p.lasts <= faults_end(duration)), "seed {seed}: {plan:?}");
                for lane in Lane::ALL {
                    let faults: Vec<_> = plan.iter().filter(|p| p.fault.lane() == lane).collect();
                    let apart = faults.windows(2).all(|w| w[0].at + w[0].lasts < w[1].at);
                    assert!(apart, "seed {seed}: one {lane:?} fault at a time: {faults:?}");
                }
            }
        }
    }
}
