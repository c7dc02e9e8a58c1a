//! Where an accepted event goes: the broker with a confirm, else the spool. Either way it is durable
//! before the webhook is answered.

use std::sync::Arc;

use bridge_shared::amqp::topology::event_route;
use bridge_shared::amqp::BrokerLink;
use bridge_shared::event::EventKind;

use crate::spool::{Spool, SpoolError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Published,
    Spooled,
}

#[derive(Clone)]
pub struct EventSink {
    pub link: Arc<BrokerLink>,
    pub spool: Arc<Spool>,
    pub exchange: String,
}

impl EventSink {
    pub async fn store(&self, kind: EventKind, body: &[u8]) -> Result<Stored, SpoolError> {
        if let Some(publisher) = self.link.publisher() {
            match publisher.publish(&self.exchange, event_route(kind, body.len()), body, Default::default()).await {
                Ok(()) => return Ok(Stored::Published),
                Err(error) => {
                    // The broker may still have it (a lost confirm): spooling may then duplicate
                    // the event, which the event id makes harmless; losing it is not an option.
                    tracing::warn!(%error, "publish failed; spooling the event");
                    self.link.report_failure(&publisher);
                }
            }
        }
        self.spool.push(kind, body).await.map(|()| Stored::Spooled)
    }

    /// Whether an event could be taken now, and if not, why.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.link.publisher().is_some() || self.spool.writable() {
            Ok(())
        } else {
            Err("the broker is unreachable and the spool cannot be written")
        }
    }
}
