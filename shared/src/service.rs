//! What ingest, deliver and `deliver console` share as processes: an HTTP server bound before
//! anything runs (tests ask for port 0 and read the port back), and a run that ends on
//! SIGTERM/SIGINT or [`Served::handle`]`.stop`, after which each winds down its own work.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

use actix_web::dev::{Server, ServerHandle};

use crate::lifecycle::invalid_configuration;

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
