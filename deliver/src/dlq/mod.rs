//! `deliver dlq stats | list | replay | export | purge`: the operators' view of the dead-letter
//! queue. Every command reads a snapshot of the queue through [`DeadQueue`], so what it does not
//! remove stays, in the queue, whatever happens to the command.

mod letter;
mod progress;
mod queue;
mod report;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge_shared::amqp::headers;
use bridge_shared::amqp::session::SessionError;
use bridge_shared::amqp::topology::event_route;
use bridge_shared::amqp::PublishError;
use bridge_shared::event::EventKind;
use bridge_shared::settings::AmqpSettings;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{json, Value};

pub use letter::{parse_since, DeadLetter, Filter};
pub use queue::{DeadQueue, Selection};

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
    #[error("RabbitMQ: {0}")]
    Session(#[from] SessionError),
    #[error("replay stopped, the message stays in the dead-letter queue: {0}")]
    Publish(#[from] PublishError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("RabbitMQ did not answer in time; the event may or may not have been sent again")]
    TimedOut,
}

/// How a command's result is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// Counts of dead letters by integration, kind and class.
type Counts = BTreeMap<(String, &'static str, &'static str), u64>;

fn count(counts: &mut Counts, letter: &DeadLetter) {
    *counts.entry((letter.integration.clone(), letter.kind_str(), report::class_of(letter))).or_default() += 1;
}

fn counts_json(counts: &Counts) -> Value {
    let total: u64 = counts.values().sum();
    let groups: Vec<Value> = counts
        .iter()
        .map(|((integration, kind, class), n)| json!({"integration": integration, "kind": kind, "class": class, "count": n}))
        .collect();
    json!({"total": total, "groups": groups})
}

/// Counts by integration, kind and class.
pub async fn stats(amqp: &AmqpSettings, selection: &Selection, format: Format) -> Result<String, DlqError> {
    let mut queue = DeadQueue::open(amqp, "reading").await?;
    let mut counts = Counts::new();
    while let Some((_, letter)) = queue.next_match(selection).await? {
        count(&mut counts, &letter);
    }
    queue.release().await?;
    Ok(match format {
        Format::Json => format!("{}\n", counts_json(&counts)),
        Format::Table => {
            let total: u64 = counts.values().sum();
            let mut rows: Vec<Vec<String>> = counts
                .into_iter()
                .map(|((integration, kind, class), n)| {
                    vec![report::or_dash(&integration), kind.into(), class.into(), n.to_string()]
                })
                .collect();
            rows.push(vec!["total".into(), String::new(), String::new(), total.to_string()]);
            crate::table::table(&["INTEGRATION", "KIND", "CLASS", "COUNT"], &rows)
        }
    })
}

/// In one scan, what `stats --json` counts and the first `listed` letters themselves (the
/// console's page: two scans would read the whole queue twice).
pub async fn overview(
    amqp: &AmqpSettings,
    selection: &Selection,
    listed: usize,
) -> Result<(Value, Vec<DeadLetter>), DlqError> {
    let mut queue = DeadQueue::open(amqp, "reading").await?;
    let (mut counts, mut letters) = (Counts::new(), Vec::new());
    while let Some((_, letter)) = queue.next_match(selection).await? {
        count(&mut counts, &letter);
        if letters.len() < listed {
            letters.push(letter);
        }
    }
    queue.release().await?;
    Ok((counts_json(&counts), letters))
}

/// The matching dead letters, one per line (JSON lines with `--json`).
pub async fn list(amqp: &AmqpSettings, selection: &Selection, format: Format) -> Result<String, DlqError> {
    let mut queue = DeadQueue::open(amqp, "reading").await?;
    let mut letters = Vec::new();
    while let Some((_, letter)) = queue.next_match(selection).await? {
        letters.push(letter);
    }
    queue.release().await?;
    Ok(match format {
        Format::Json => {
            letters.iter().map(|l| format!("{}\n", serde_json::to_string(l).expect("serializes"))).collect()
        }
        Format::Table => report::letters(&letters),
    })
}

/// Writes the matching dead letters, whole (headers and envelope), to a JSON-lines file; the queue
/// is left as it was. The file holds phones and e-mails: it is created new, readable by its owner
/// only, and only once the broker answered, so a failed export leaves nothing behind.
pub async fn export(amqp: &AmqpSettings, selection: &Selection, out: &Path, replace: bool) -> Result<String, DlqError> {
    let mut queue = DeadQueue::open(amqp, "exporting").await?;
    let mut file = std::io::BufWriter::new(new_private_file(out, replace)?);
    while let Some((delivery, letter)) = queue.next_match(selection).await? {
        serde_json::to_writer(&mut file, &exported(&delivery, &letter)).map_err(std::io::Error::from)?;
        file.write_all(b"\n")?;
    }
    file.flush()?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let count = queue.matched;
    queue.release().await?;
    Ok(format!("exported {count} dead letters to {}; the queue is unchanged\n", out.display()))
}

/// Creates `path` for writing, mode 0600, never through a symbolic link: an existing path (a file or
/// a link, even a dangling one) is refused unless `replace`, and then the name itself is removed
/// first, never what a link points at.
fn new_private_file(path: &Path, replace: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if replace && path.symlink_metadata().is_ok() {
        std::fs::remove_file(path)?;
    }
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            std::io::Error::new(e.kind(), format!("{} exists: choose a new file, or add --force", path.display()))
        } else {
            std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
        }
    })
}

fn exported(delivery: &Delivery, letter: &DeadLetter) -> Value {
    let envelope = serde_json::from_slice::<Value>(&delivery.data)
        .unwrap_or_else(|_| json!({"unparseable_body": String::from_utf8_lossy(&delivery.data)}));
    json!({
        "dead_letter": letter,
        "routing_key": delivery.routing_key.as_str(),
        "headers": headers_json(&delivery.properties.headers().clone().unwrap_or_default()),
        "envelope": envelope,
    })
}

fn headers_json(h: &FieldTable) -> Value {
    let value = |v: &AMQPValue| match v {
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        other => json!(format!("{other:?}")),
    };
    Value::Object(h.inner().iter().map(|(k, v)| (k.to_string(), value(v))).collect())
}

/// Deletes the matching dead letters for good. The caller has made sure the operator said `--yes`.
pub async fn purge(amqp: &AmqpSettings, selection: &Selection, dry_run: bool) -> Result<String, DlqError> {
    let mut queue = DeadQueue::open(amqp, "purging").await?;
    while let Some((delivery, _)) = queue.next_match(selection).await? {
        if !dry_run {
            queue.remove(&delivery).await?;
        }
    }
    let (matched, scanned) = (queue.matched, queue.scanned);
    queue.release().await?;
    Ok(if dry_run {
        format!("would purge {matched} of {scanned} dead letters (dry run: nothing removed)\n")
    } else {
        format!("purged {matched} of {scanned} dead letters\n")
    })
}

/// How a replay goes.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Messages per second at most.
    pub rate: Option<f64>,
    pub dry_run: bool,
    pub publish_timeout: Duration,
}

/// Publishes each matching dead letter back to the events exchange (confirmed) and only then removes
/// the dead copy. Stops cleanly at Ctrl-C; killed, it leaves at most one message both replayed and
/// still dead, which the ledger and CoMagic's `ext_id` make harmless to replay again.
pub async fn replay(amqp: &AmqpSettings, selection: &Selection, options: &ReplayOptions) -> Result<String, DlqError> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let watcher = {
        let interrupted = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, Ordering::SeqCst);
            }
        })
    };
    let result = replay_until(amqp, selection, options, &interrupted).await;
    watcher.abort();
    result
}

async fn replay_until(
    amqp: &AmqpSettings,
    selection: &Selection,
    options: &ReplayOptions,
    interrupted: &AtomicBool,
) -> Result<String, DlqError> {
    let mut queue = DeadQueue::open(amqp, if options.dry_run { "checking" } else { "replaying" }).await?;
    let publisher = queue.publisher(options.publish_timeout).await?;
    let exchange = queue.topology.events_exchange();
    let started = Instant::now();
    let (mut replayed, mut unroutable, mut would) = (0usize, 0usize, Vec::new());
    let mut failure = None;
    while !interrupted.load(Ordering::SeqCst) {
        let Some((delivery, letter)) = queue.next_match(selection).await? else { break };
        let Some(kind) = letter.kind else {
            // Neither headers, envelope nor routing key say chat or offline: nowhere to send it.
            unroutable += 1;
            continue;
        };
        if options.dry_run {
            would.push(letter);
            continue;
        }
        if let Some(rate) = options.rate {
            let due = started + Duration::from_secs_f64(replayed as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        if let Err(e) = publisher
            .publish(&exchange, event_route(kind, delivery.data.len()), &delivery.data, replay_headers(&delivery))
            .await
        {
            failure = Some(e);
            break;
        }
        queue.remove(&delivery).await?;
        replayed += 1;
    }
    let (matched, scanned) = (queue.matched, queue.scanned);
    queue.release().await?;
    if let Some(e) = failure {
        return Err(DlqError::Publish(e));
    }
    let mut out = if options.dry_run {
        format!(
            "{}would replay {} of {scanned} dead letters (dry run: nothing moved)\n",
            report::letters(&would),
            would.len()
        )
    } else {
        format!("replayed {replayed} of {scanned} dead letters to {exchange}\n")
    };
    if unroutable > 0 {
        out += &format!("{unroutable} matching dead letters name no kind (chat/offline) and stay in the queue\n");
    }
    if interrupted.load(Ordering::SeqCst) {
        out += &format!(
            "interrupted: {} matching dead letters were not replayed and stay\n",
            matched - replayed - unroutable
        );
    }
    Ok(out)
}

/// Publishes an event's envelope (one the journey kept: a skipped event's) to the events
/// exchange as a replay publishes a dead letter, confirmed: deliver takes it as new, from its
/// first step, and its journey says `replayed`.
/// The whole exchange has `publish_timeout` plus [`SEND_AGAIN_SLACK`]: a broker that stops
/// answering after the connect fails it, never hangs it.
pub async fn send_again(amqp: &AmqpSettings, kind: EventKind, envelope: &[u8]) -> Result<String, DlqError> {
    let exchange = async {
        let queue = DeadQueue::open(amqp, "sending again").await?;
        let publisher = queue.publisher(amqp.publish_timeout).await?;
        let exchange = queue.topology.events_exchange();
        let mut h = FieldTable::default();
        headers::set_str(&mut h, headers::REPLAYED_AT, &chrono::Utc::now().to_rfc3339());
        let sent = publisher.publish(&exchange, event_route(kind, envelope.len()), envelope, h).await;
        // Confirmed is sent, whatever the close says.
        sent.map_err(DlqError::Publish)?;
        let _ = queue.release().await;
        Ok(format!("sent again to {exchange}\n"))
    };
    match tokio::time::timeout(amqp.publish_timeout + SEND_AGAIN_SLACK, exchange).await {
        Ok(result) => result,
        Err(_) => Err(DlqError::TimedOut),
    }
}

/// What a send-again may take beyond its publish's deadline: the connect, the channel, the close.
const SEND_AGAIN_SLACK: Duration = Duration::from_secs(20);

/// A replayed message starts over: no error headers, no retry tier, its attempts kept for history,
/// and the replay time from which `retry_for` counts again. A doubt stays: an upload whose answer
/// was lost before it was dead-lettered may be in CoMagic, so the report is asked first.
fn replay_headers(delivery: &Delivery) -> FieldTable {
    let old = delivery.properties.headers().clone().unwrap_or_default();
    let mut h = FieldTable::default();
    for kept in [headers::ATTEMPTS, headers::IN_DOUBT] {
        if let Some(value) = headers::get_u64(&old, kept) {
            headers::set_u64(&mut h, kept, value);
        }
    }
    headers::set_str(&mut h, headers::REPLAYED_AT, &chrono::Utc::now().to_rfc3339());
    h
}
