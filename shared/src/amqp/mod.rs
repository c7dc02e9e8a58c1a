//! RabbitMQ: connecting, the topology both binaries declare, and confirmed publishing.

pub mod headers;
mod link;
mod publisher;
pub mod session;
pub mod topology;

pub use link::{until_stopped, BrokerLink, Ended};
pub use publisher::{PublishError, Publisher};
pub use topology::{declare_topology, Topology};

use lapin::{Connection, ConnectionProperties};

/// One connection, named so operators can tell the processes apart in the management UI.
pub async fn connect(url: &str, name: &str) -> lapin::Result<Connection> {
    Connection::connect(url, ConnectionProperties::default().with_connection_name(name.into())).await
}

/// The node an address names, `host:port`, without scheme, credentials or vhost: the label that
/// says which broker node a process is on (`bridge_amqp_node`, readiness, logs).
pub fn node_address(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    let default_port = if url.starts_with("amqps://") { 5671 } else { 5672 };
    match host.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => host.to_owned(),
        _ => format!("{host}:{default_port}"),
    }
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

    #[test]
    fn a_node_is_named_by_host_and_port_alone() {
        assert_eq!(super::node_address("amqp://guest:p@ss@10.0.0.7:5673/%2f"), "10.0.0.7:5673");
        assert_eq!(super::node_address("amqps://rabbit-1.internal/vhost?heartbeat=10"), "rabbit-1.internal:5671");
        assert_eq!(super::node_address("amqp://localhost"), "localhost:5672");
    }
}
