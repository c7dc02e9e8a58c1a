//! The topology on a real broker routes each message where the plan says, and only there.

use std::time::Duration;

use bridge_shared::amqp::topology::{plan, RETIRED_RETRY_TIER_HEADER, RETRY_TIERS, RETRY_TIER_HEADER};
use bridge_shared::amqp::{connect, declare_topology, headers};
use bridge_tests::broker::TestBroker;
use bridge_tests::wait_for;
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};

/// Sends one message to each retry tier and checks that each tier holds exactly its own. The
/// shortest tier may already have sent its message back to the deliver queue.
async fn each_retry_lands_in_its_own_tier_alone(broker: &TestBroker) {
    let publisher = broker.publisher().await;
    let t = &broker.topology;
    for (tier, _) in RETRY_TIERS {
        let mut h = FieldTable::default();
        headers::set_str(&mut h, RETRY_TIER_HEADER, tier);
        publisher.publish(&t.retry_exchange(), "chat", tier.as_bytes(), h).await.expect("the broker confirms");
    }
    let (first, _) = RETRY_TIERS[0];
    for (tier, _) in &RETRY_TIERS[1..] {
        assert_eq!(broker.depth(&t.retry_queue(tier)).await, 1, "tier {tier} holds its own message and no copy");
    }
    let first_and_back = broker.depth(&t.retry_queue(first)).await + broker.depth(&t.deliver_queue()).await;
    assert_eq!(first_and_back, 1, "tier {first} holds its message, or has sent it back: one copy in all");
    // The first tier's delay runs out and its message returns to the deliver queue, once. Dead
    // lettering out of a quorum queue is not atomic with the expiry (RabbitMQ 4 routes it a moment
    // after the retry queue is empty): wait for both.
    wait_for("the first tier's message back in the deliver queue", Duration::from_secs(30), || async {
        let left = broker.depth(&t.retry_queue(first)).await;
        (left == 0 && broker.depth(&t.deliver_queue()).await >= 1).then_some(())
    })
    .await;
    let back = broker.take_all(&t.deliver_queue()).await;
    assert_eq!(back.len(), 1, "one message came back from the first tier");
    assert_eq!((back[0].routing_key.as_str(), back[0].body.as_slice()), ("chat", first.as_bytes()));
}

#[tokio::test]
async fn a_retried_message_waits_in_its_own_tier_and_comes_back_once() {
    let broker = TestBroker::new("tiers").await;
    each_retry_lands_in_its_own_tier_alone(&broker).await;
    broker.cleanup().await;
}

/// Releases before this one bound the tiers on an `x-` header, which a headers exchange ignores:
/// every tier matched every retry. Declaring the topology again removes those bindings.
#[tokio::test]
async fn declaring_removes_the_bindings_that_copied_each_retry_into_every_tier() {
    let broker = TestBroker::new("retired-tiers").await;
    let t = &broker.topology;
    let connection = connect(&broker.url, "verbox-bridge tests").await.expect("RabbitMQ answers");
    let channel = connection.create_channel().await.expect("a channel");
    for (tier, _) in RETRY_TIERS {
        let mut args = FieldTable::default();
        args.insert("x-match".into(), AMQPValue::LongString("all".into()));
        args.insert(RETIRED_RETRY_TIER_HEADER.into(), AMQPValue::LongString(tier.into()));
        let (queue, exchange) = (t.retry_queue(tier), t.retry_exchange());
        channel
            .queue_bind(queue.as_str().into(), exchange.as_str().into(), "".into(), QueueBindOptions::default(), args)
            .await
            .expect("the old binding");
    }
    declare_topology(&connection, t).await.expect("the topology declares over the old one");
    each_retry_lands_in_its_own_tier_alone(&broker).await;
    let _ = connection.close(0, "done".into()).await;
    broker.cleanup().await;
}

/// Queues an earlier release created have no replica count, and the broker refuses a declare whose
/// arguments differ: the services still start on such a broker, and take the queues as they are.
#[tokio::test]
async fn queues_created_without_a_replica_count_are_taken_as_they_are() {
    let broker = TestBroker::new("old-queues").await;
    let t = &broker.topology;
    broker.delete_queue(&t.deliver_queue()).await;
    let connection = connect(&broker.url, "verbox-bridge tests").await.expect("RabbitMQ answers");
    let channel = connection.create_channel().await.expect("a channel");
    let old_style = plan(t).queues.into_iter().find(|q| q.name == t.deliver_queue()).expect("the deliver queue");
    let mut args = FieldTable::default();
    for (key, value) in old_style.arguments.iter().filter(|(k, _)| *k != "x-quorum-initial-group-size") {
        args.insert((*key).into(), value.clone());
    }
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(t.deliver_queue().as_str().into(), durable, args).await.expect("the old queue");
    declare_topology(&connection, t).await.expect("the topology declares over a queue of an earlier release");
    declare_topology(&connection, t).await.expect("and again");
    let _ = connection.close(0, "done".into()).await;
    broker.cleanup().await;
}
