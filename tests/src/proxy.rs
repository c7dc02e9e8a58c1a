//! A TCP proxy in front of the broker (or PostgreSQL) that a test can cut and restore: the
//! service becomes unreachable for the process under test (connections reset, new ones refused)
//! without stopping what other tests share. It can also play a black hole: connections are
//! accepted and never answered, as a half-dead node or a wrong port behind a load balancer does;
//! and silence the line: the connections already open stay open and carry nothing, new ones are
//! held, as when a network drops every packet (nothing is reset, so only a deadline notices).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const FORWARD: u8 = 0;
const REFUSE: u8 = 1;
const HOLD: u8 = 2;
const SILENT: u8 = 3;

pub struct TcpProxy {
    address: SocketAddr,
    mode: Arc<AtomicU8>,
    generation: watch::Sender<u64>,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a proxy port");
        let address = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let (generation, _) = watch::channel(0u64);
        let (accept_mode, accept_generation) = (mode.clone(), generation.clone());
        let forward_mode = mode.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cut = accept_generation.subscribe();
                match accept_mode.load(Ordering::SeqCst) {
                    REFUSE => continue, // dropped: the connection is reset
                    HOLD | SILENT => {
                        // Open, silent, until the mode changes.
                        tokio::spawn(async move {
                            let _ = cut.changed().await;
                            drop(inbound);
                        });
                        continue;
                    }
                    _ => {}
                }
                let mode = forward_mode.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
                        _ = cut.changed() => {}
                    }
                    if mode.load(Ordering::SeqCst) == SILENT {
                        // Both ends open, nothing carried, until the next switch.
                        let _ = cut.changed().await;
                    }
                });
            }
        });
        TcpProxy { address, mode, generation }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// An AMQP URL through this proxy.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.address)
    }

    /// Resets every open connection and refuses new ones.
    pub fn cut(&self) {
        self.switch(REFUSE);
    }

    /// Resets every open connection; new ones are accepted and never answered.
    pub fn black_hole(&self) {
        self.switch(HOLD);
    }

    /// Open connections stay open and carry nothing more; new ones are accepted and never
    /// answered. Nothing is reset: the peers only notice by their own deadlines.
    pub fn silence(&self) {
        self.switch(SILENT);
    }

    /// Forwards new connections to the broker again.
    pub fn restore(&self) {
        self.switch(FORWARD);
    }

    fn switch(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }
}

/// The broker's address from an AMQP URL like `amqp://user:pass@127.0.0.1:5672/%2f`.
pub fn broker_address(url: &str) -> SocketAddr {
    let host = url.split('@').next_back().unwrap().split('/').next().unwrap();
    let host = host.replace("localhost", "127.0.0.1");
    host.parse().unwrap_or_else(|_| format!("{host}:5672").parse().expect("a host:port"))
}
