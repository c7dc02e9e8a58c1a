//! What the drill's faults hit, and how each is set off and ended: broker nodes through
//! `scripts/cluster.sh`, the deliver replicas (real binaries, SIGKILLed and started again), the
//! ingest replicas (in the test process, stopped and started again on their own spool, taken out
//! of the load balancer meanwhile) and the sandbox's scripted faults. Each lane of the schedule
//! runs on its own, one fault at a time; every fault set off is logged with the time and the
//! load's progress, so a run's log reads as a timeline.

use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge_tests::running::Running;
use bridge_tests::sandbox::{Fault as SandboxFault, FaultKind};

use super::load::{Balancer, Tally};
use super::schedule::{Fault, Lane, Planned, KINDS, SLOW};
use crate::drill::cluster;
use crate::helpers::{start_deliver_binary_with, terminate, Pipeline};

pub struct Targets<'a> {
    p: &'a Pipeline,
    deliver_env: &'a [(&'static str, String)],
    delivers: Mutex<[Child; 2]>,
    /// The number of the next deliver run (its log is `deliver-N.log` in the test's directory).
    next_run: AtomicUsize,
    ingests: Mutex<[Option<Running>; 2]>,
    balancer: Arc<Balancer>,
    tally: Arc<Tally>,
    started: Instant,
    /// How many faults of each of [`KINDS`] were set off.
    applied: Mutex<[usize; KINDS.len()]>,
}

impl<'a> Targets<'a> {
    /// Starts the two deliver replicas; the schedule's clock starts now, with the load.
    pub fn new(
        p: &'a Pipeline,
        deliver_env: &'a [(&'static str, String)],
        ingests: [Running; 2],
        balancer: Arc<Balancer>,
        tally: Arc<Tally>,
    ) -> Self {
        let delivers = [start_deliver_binary_with(p, 1, deliver_env), start_deliver_binary_with(p, 2, deliver_env)];
        Targets {
            p,
            deliver_env,
            delivers: Mutex::new(delivers),
            next_run: AtomicUsize::new(3),
            ingests: Mutex::new(ingests.map(Some)),
            balancer,
            tally,
            started: Instant::now(),
            applied: Mutex::new([0; KINDS.len()]),
        }
    }

    /// Carries out `plan`, its lanes side by side; returns when the last fault has ended.
    pub async fn carry_out(&self, plan: &[Planned]) {
        let lanes = Lane::ALL.map(|lane| {
            let faults: Vec<Planned> = plan.iter().filter(|p| p.fault.lane() == lane).copied().collect();
            self.run_lane(faults)
        });
        futures_util::future::join_all(lanes).await;
    }

    async fn run_lane(&self, faults: Vec<Planned>) {
        for planned in faults {
            // The schedule's own clock: a fault starts at its time (or at once, when the one
            // before it in the lane took longer to end than planned) and lasts as planned.
            tokio::time::sleep_until((self.started + planned.at).into()).await;
            self.log(&format!("{:?} for {:.1} s", planned.fault, planned.lasts.as_secs_f64()));
            self.set_off(planned.fault).await;
            tokio::time::sleep(planned.lasts).await;
            self.end(planned.fault).await;
            self.log(&format!("{:?} ended", planned.fault));
            let kind = KINDS.iter().position(|k| *k == planned.fault.kind()).expect("a known kind");
            self.applied.lock().unwrap()[kind] += 1;
        }
    }

    async fn set_off(&self, fault: Fault) {
        match fault {
            Fault::NodeKilled(node) => cluster_in_background(&["kill", &node.to_string()]).await,
            Fault::DeliverKilled(r) => {
                let mut delivers = self.delivers.lock().unwrap();
                delivers[r].kill().expect("SIGKILL to a deliver replica");
                delivers[r].wait().expect("the killed replica is reaped");
            }
            Fault::IngestStopped(r) => {
                self.balancer.take_out(r);
                let running = self.ingests.lock().unwrap()[r].take().expect("the replica runs");
                running.stop().await;
            }
            Fault::Comagic500 => self.p.sandbox.add_fault(every_call(FaultKind::Http500, Duration::ZERO)),
            Fault::AnswersLost => self.p.sandbox.add_fault(every_call(FaultKind::AnswerLost, Duration::ZERO)),
            Fault::Slow => self.p.sandbox.add_fault(every_call(FaultKind::Latency, SLOW)),
            Fault::Hang => self.p.sandbox.add_fault(every_call(FaultKind::Hang, Duration::ZERO)),
        }
    }

    async fn end(&self, fault: Fault) {
        match fault {
            Fault::NodeKilled(node) => cluster_in_background(&["start-node", &node.to_string()]).await,
            Fault::DeliverKilled(r) => {
                let run = self.next_run.fetch_add(1, Ordering::SeqCst);
                self.delivers.lock().unwrap()[r] = start_deliver_binary_with(self.p, run, self.deliver_env);
            }
            Fault::IngestStopped(r) => {
                // On its own spool again, as a restarted pod on its volume; on a new port.
                let running = self.p.another_ingest(r + 1).await;
                self.balancer.put_back(r, running.address());
                self.ingests.lock().unwrap()[r] = Some(running);
            }
            // The CoMagic lane holds one sandbox fault at a time.
            Fault::Comagic500 | Fault::AnswersLost | Fault::Slow | Fault::Hang => self.p.sandbox.clear_faults(),
        }
    }

    fn log(&self, what: &str) {
        let (posted, stored) = (self.tally.posted.load(Ordering::SeqCst), self.p.sandbox.stored_total());
        println!("{:>7.1} s  {what} ({posted} posted, {stored} stored)", self.started.elapsed().as_secs_f64());
    }

    /// The replicas, still running, and how many faults of each of [`KINDS`] were set off.
    pub fn done(self) -> (Replicas, [usize; KINDS.len()]) {
        let replicas =
            Replicas { delivers: self.delivers.into_inner().unwrap(), ingests: self.ingests.into_inner().unwrap() };
        (replicas, self.applied.into_inner().unwrap())
    }
}

/// The replicas once the schedule is over: they run on while everything drains.
pub struct Replicas {
    delivers: [Child; 2],
    ingests: [Option<Running>; 2],
}

impl Replicas {
    /// Stops them, deliver by SIGTERM as an orchestrator does.
    pub async fn stop(mut self) {
        self.delivers.iter_mut().for_each(terminate);
        for running in self.ingests.into_iter().flatten() {
            running.stop().await;
        }
    }
}

/// A sandbox fault on every call of every account until it is cleared.
fn every_call(kind: FaultKind, latency: Duration) -> SandboxFault {
    SandboxFault { kind, latency_ms: latency.as_millis() as u64, ..Default::default() }
}

/// `scripts/cluster.sh ARGS` on a blocking thread: a node's start takes seconds, and the other
/// lanes go on meanwhile.
async fn cluster_in_background(args: &[&str]) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || cluster(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .expect("scripts/cluster.sh ran");
}
