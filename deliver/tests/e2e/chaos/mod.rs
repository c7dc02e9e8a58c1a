//! The chaos drill: where the cluster drill (`cluster.rs`) sets off a fixed sequence, this one
//! runs a seeded random schedule of faults (`schedule`) for `CHAOS_SECONDS` under a steady load of
//! 100 webhooks/s over 20 integrations, on the local 3-node cluster with two ingest and two deliver
//! replicas sharing the PostgreSQL ledger: broker nodes SIGKILLed and started again (one at a
//! time, so the quorum holds), deliver replicas SIGKILLed and started again, ingest replicas
//! stopped and started again (the load goes to the other meanwhile), and CoMagic answering 500,
//! losing answers after storing, answering 3 s late, or hanging 40 s. The faults end before the
//! load; then everything drains. Afterwards each webhook was answered 200 and each is stored
//! exactly once, none is dead-lettered; the latency from the 200 to CoMagic storing the chat is
//! printed, not asserted (a benchmark figure). `CHAOS_SEED` replays a run: it is printed first.
//! `scripts/chaos.sh [seconds] [seed]` starts the cluster and runs it.

mod load;
mod schedule;
mod summary;
mod targets;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bridge_shared::settings::Settings;

use crate::drill::{pipeline_on_cluster, settle, stored_chats, stored_twice};
use load::{steady_load, Balancer, Tally};
use schedule::{schedule, HANG, SLOW};
use summary::{explain, Summary};
use targets::Targets;

const PER_SECOND: u64 = 100;
/// `CHAOS_SECONDS` when unset: the short run CI makes.
const DEFAULT_SECONDS: u64 = 90;
/// How long the drain after the load may take: past the 10 min retry tier, which an event that
/// failed three times in a row waits out.
const DRAIN: Duration = Duration::from_secs(900);

/// `CHAOS_SECONDS` and `CHAOS_SEED` (a new seed from the clock when unset).
fn seconds_and_seed() -> (u64, u64) {
    let number = |name: &str| {
        std::env::var(name).ok().map(|v| v.trim().parse::<u64>().unwrap_or_else(|_| panic!("{name}={v}: not a number")))
    };
    let clock = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let seconds = number("CHAOS_SECONDS").unwrap_or(DEFAULT_SECONDS);
    assert!(seconds >= 30, "CHAOS_SECONDS={seconds}: at least 30 (the faults leave a quiet tail)");
    (seconds, number("CHAOS_SEED").unwrap_or(clock.as_nanos() as u64 ^ u64::from(std::process::id())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local 3-node cluster: scripts/chaos.sh runs it (scripts/test.sh a short run)"]
async fn a_seeded_schedule_of_faults_under_load_loses_nothing_and_stores_each_once() {
    let (seconds, seed) = seconds_and_seed();
    println!(
        "chaos drill: seed {seed}, {seconds} s at {PER_SECOND} webhooks/s (replay: scripts/chaos.sh {seconds} {seed})"
    );
    let plan = schedule(seed, Duration::from_secs(seconds));
    for planned in &plan {
        let (at, lasts) = (planned.at.as_secs_f64(), planned.lasts.as_secs_f64());
        println!("  planned at {at:>6.1} s: {:?} for {lasts:.1} s", planned.fault);
    }
    let (mut p, env) = pipeline_on_cluster("chaos").await;
    let timeout = Settings::load(&p.config).expect("the test's config").deliver.comagic_timeout;
    assert!(HANG > timeout && SLOW < timeout, "a hang outlasts comagic_timeout ({timeout:?}), slowness does not");
    let ingests = [p.another_ingest(1).await, p.another_ingest(2).await];
    let balancer = Arc::new(Balancer::new(ingests[0].address(), ingests[1].address()));
    let tally = Arc::new(Tally::default());
    let targets = Targets::new(&p, &env, ingests, balancer.clone(), tally.clone());
    let load = tokio::spawn(steady_load(balancer, tally.clone(), PER_SECOND, seconds));
    targets.carry_out(&plan).await;
    load.await.expect("the load ran to the end");
    let load_ended = Instant::now();
    let (replicas, applied) = targets.done();
    let answered = tally.answered.lock().unwrap().clone();
    let settled = settle(&mut p, answered.len(), DRAIN).await;
    let drained = load_ended.elapsed();
    replicas.stop().await;

    let stored = stored_chats(&p.sandbox);
    let twice = stored_twice(&stored);
    let missing: Vec<&str> = answered.keys().filter(|id| !stored.contains_key(*id)).map(String::as_str).collect();
    let latencies =
        answered.iter().filter_map(|(id, at)| Some(stored.get(id)?.first.saturating_duration_since(*at))).collect();
    let dead = p.broker.depth(&p.broker.topology.dead_queue()).await;
    let webhooks = PER_SECOND * seconds;
    let other_answers = tally.other_answers.load(std::sync::atomic::Ordering::SeqCst);
    Summary {
        seed,
        seconds,
        webhooks,
        answered: answered.len(),
        other_answers,
        resent: tally.resent.load(std::sync::atomic::Ordering::SeqCst),
        stored: stored.len(),
        twice: twice.len(),
        missing: missing.len(),
        dead,
        applied,
        latencies,
        drained,
    }
    .print();
    if !twice.is_empty() || !missing.is_empty() {
        let ids: Vec<&str> = twice.iter().take(5).chain(missing.iter().take(5)).copied().collect();
        let kept = explain(p.dir.path(), seed, &ids);
        let first = |ids: &[&str]| ids.iter().take(20).copied().collect::<Vec<_>>().join(" ");
        println!("\nstored twice ({}, the first 20): {}", twice.len(), first(&twice));
        println!("never stored ({}, the first 20): {}", missing.len(), first(&missing));
        println!("the deliver logs: {}", kept.display());
    }
    assert!(settled, "everything stored and settled within {DRAIN:?} of the load's end");
    assert_eq!(answered.len() as u64, webhooks, "every webhook was answered 200 ({other_answers} other answers)");
    assert!(missing.is_empty(), "every webhook answered 200 is stored");
    assert!(twice.is_empty(), "no webhook is stored twice");
    assert_eq!(dead, 0, "none is dead-lettered");
    p.stop().await;
}
