//! ingest, deliver or the console started inside the test process on port 0, as every test binary
//! and benchmark runs them.

use actix_web::dev::ServerHandle;
use bridge_shared::service::Service;
use tokio::task::JoinHandle;

/// A service running on a task of its own.
pub struct Running {
    address: String,
    metrics_address: String,
    handle: ServerHandle,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub fn start(service: impl Service) -> Running {
        let address = format!("http://127.0.0.1:{}", service.served().port());
        let metrics_address = format!("http://127.0.0.1:{}", service.metrics_port());
        let handle = service.served().handle();
        Running { address, metrics_address, handle, task: tokio::spawn(service.run_until_stopped()) }
    }

    /// Its HTTP address, `http://127.0.0.1:<port>`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Where its `/metrics` is: [`Self::address`] but for ingest, which keeps it off the public port.
    pub fn metrics_address(&self) -> &str {
        &self.metrics_address
    }

    /// Stops it as SIGTERM does and waits until it has wound down.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        self.task.await.expect("the service's task ends").expect("the service stops cleanly");
    }
}
