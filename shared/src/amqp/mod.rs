//! RabbitMQ: connecting, the topology both binaries declare, and confirmed publishing.

pub mod headers;
mod publisher;
pub mod session;
pub mod topology;

pub use publisher::{PublishError, Publisher};
pub use topology::{declare_topology, Topology};

use lapin::{Connection, ConnectionProperties};

/// One connection, named so operators can tell the processes apart in the management UI.
pub async fn connect(url: &str, name: &str) -> lapin::Result<Connection> {
    Connection::connect(url, ConnectionProperties::default().with_connection_name(name.into())).await
}

/// `amqp://user:password@host/vhost` → `amqp://user:***@host/vhost`, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(super::redact_url("amqp://guest:secret@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(super::redact_url("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }
}
