//! What ingest, deliver and `deliver console` share as processes: an HTTP server bound before
//! anything runs (tests ask for port 0 and read the port back), and a run that ends on
//! SIGTERM/SIGINT or [`Served::handle`]`.stop`, after which each winds down its own work.

use std::fmt::Display;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;

use actix_web::dev::{Server, ServerHandle};

use crate::integrations::store::StoreError;
use crate::lifecycle::invalid_configuration;

/// Why a service could not start; each message begins with the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("integrations: {0}")]
    Integrations(#[from] StoreError),
    /// The service's own state (ingest's spool, deliver's ledger) could not be opened.
    #[error("{setting}: {message}")]
    State { setting: &'static str, message: String },
    /// Its `listen` address could not be bound.
    #[error("{setting}: {error}")]
    Bind { setting: &'static str, error: std::io::Error },
}

impl StartError {
    pub fn state(setting: &'static str, error: impl Display) -> Self {
        StartError::State { setting, message: error.to_string() }
    }

    pub fn bind(setting: &'static str) -> impl Fn(std::io::Error) -> Self {
        move |error| StartError::Bind { setting, error }
    }
}

/// Binds the `listen` address named `setting` before anything runs, so a test can ask for port 0
/// and read the port back.
pub fn bind(setting: &'static str, address: SocketAddr) -> Result<(TcpListener, u16), StartError> {
    let listener = TcpListener::bind(address).map_err(StartError::bind(setting))?;
    let port = listener.local_addr().map_err(StartError::bind(setting))?.port();
    Ok((listener, port))
}

/// A bound, running HTTP server and the port it got.
pub struct Served {
    port: u16,
    server: Server,
}

impl Served {
    pub fn new(port: u16, server: Server) -> Self {
        Served { port, server }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server as SIGTERM would (tests use this).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Waits until the server has stopped and answered what was in flight.
    pub async fn stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// A process built around a [`Served`] server.
pub trait Service: Sized + Send + 'static {
    fn served(&self) -> &Served;

    /// The port of its `/metrics`: the served one unless the service keeps metrics apart.
    fn metrics_port(&self) -> u16 {
        self.served().port()
    }

    /// Serves until the server is stopped, then stops the process's own tasks.
    fn run_until_stopped(self) -> impl Future<Output = std::io::Result<()>> + Send;
}

/// Runs what `main` built to its end and turns that into the exit code: 2 (through
/// [`invalid_configuration`]) when it could not be built, 1 when it failed while running.
pub async fn run_to_exit<S: Service>(binary: &str, built: Result<S, impl Display>) -> ExitCode {
    let service = match built {
        Ok(service) => service,
        Err(e) => return invalid_configuration(binary, e),
    };
    match service.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{binary}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// This machine's name (a pod's name in Kubernetes): `HOSTNAME`, else `/etc/hostname`, else
/// `localhost`. Read once.
pub fn host_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    })
}
