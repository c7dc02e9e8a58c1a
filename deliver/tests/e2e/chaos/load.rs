//! The drill's steady load: chat webhooks of 20 integrations at a fixed rate from a few clients,
//! through a load balancer over the two ingest replicas. The balancer alternates between them,
//! sends nothing to a replica taken out of it (one stopped, or restarted on a new port), and sends
//! a request that found no one answering to the other replica, as a load balancer would. It notes
//! when each webhook was first answered 200, for the latency to CoMagic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge_tests::fixtures::chat;
use serde_json::{json, Value};

use crate::drill::{post_one, tenant_of};

/// Concurrent clients, each posting its share of the webhooks at its share of the rate.
const CLIENTS: u64 = 8;
/// The client's deadline for one webhook (an ingest answers in milliseconds, spooling or not).
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a webhook is tried, alternating replicas, before the load gives up on it.
const TRIES: u64 = 10;

/// The ingest replicas the load is spread over: each one's address, `None` while it is out.
pub struct Balancer {
    replicas: Mutex<[Option<String>; 2]>,
}

impl Balancer {
    pub fn new(first: &str, second: &str) -> Self {
        Balancer { replicas: Mutex::new([Some(first.to_owned()), Some(second.to_owned())]) }
    }

    /// Takes replica `r` out: nothing new is sent to it.
    pub fn take_out(&self, r: usize) {
        self.replicas.lock().unwrap()[r] = None;
    }

    /// Puts replica `r` back, at `address`.
    pub fn put_back(&self, r: usize, address: &str) {
        self.replicas.lock().unwrap()[r] = Some(address.to_owned());
    }

    /// The replica for the `n`-th request: `n`'s own when it is in, the other one otherwise.
    fn pick(&self, n: u64) -> Option<String> {
        let replicas = self.replicas.lock().unwrap();
        let own = (n % 2) as usize;
        replicas[own].clone().or_else(|| replicas[1 - own].clone())
    }
}

/// What the load saw.
#[derive(Default)]
pub struct Tally {
    /// Each event id answered 200, and when it first was.
    pub answered: Mutex<HashMap<String, Instant>>,
    /// Webhooks posted (answered or not).
    pub posted: AtomicU64,
    /// Answers other than 200.
    pub other_answers: AtomicU64,
    /// Requests sent again to the other replica after no answer came.
    pub resent: AtomicU64,
}

/// Posts `per_second × seconds` webhooks over `balancer`, steadily; returns once all are answered.
pub async fn steady_load(balancer: Arc<Balancer>, tally: Arc<Tally>, per_second: u64, seconds: u64) {
    let http = reqwest::Client::builder().timeout(POST_TIMEOUT).build().expect("an HTTP client");
    let webhooks = per_second * seconds;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (http, balancer, tally) = (http.clone(), balancer.clone(), tally.clone());
            tokio::spawn(async move {
                let mut pace = tokio::time::interval(Duration::from_secs_f64(CLIENTS as f64 / per_second as f64));
                for i in (c..webhooks).step_by(CLIENTS as usize) {
                    pace.tick().await;
                    post_until_answered(&http, &balancer, &tally, i).await;
                    tally.posted.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("a load client ran to the end");
    }
}

/// Posts webhook `i`, to the other replica when one does not answer; tallies the answer.
async fn post_until_answered(http: &reqwest::Client, balancer: &Balancer, tally: &Tally, i: u64) {
    let (tenant, body) = (tenant_of(i), chat(i, json!({})));
    for n in i..i + TRIES {
        let Some(address) = balancer.pick(n) else { continue };
        match post_one(http, &address, &tenant, &body).await {
            Ok((200, answer)) => {
                let event_id = event_id(&answer);
                tally.answered.lock().unwrap().entry(event_id).or_insert_with(Instant::now);
                return;
            }
            Ok((status, answer)) => {
                tally.other_answers.fetch_add(1, Ordering::SeqCst);
                eprintln!("webhook {i}: HTTP {status} {answer}");
                return;
            }
            Err(error) => {
                tally.resent.fetch_add(1, Ordering::SeqCst);
                eprintln!("webhook {i}: no answer from {address} ({error}); to the other replica");
            }
        }
    }
    panic!("webhook {i}: no ingest replica answered in {TRIES} tries");
}

fn event_id(answer: &Value) -> String {
    answer["event_id"].as_str().expect("a 200 names the event id").to_owned()
}
