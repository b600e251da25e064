//! [`PerCoreServer`]: serves a router on several threads, each with its own current-thread runtime and its
//! own listening socket on the same address (`SO_REUSEPORT`), the way nginx runs its workers.
//!
//! The kernel spreads connections over the sockets, and a request then runs start to finish on the thread
//! that accepted it: the HTTP server, the gateway and the upstream call (the providers' [`UpstreamClient`]
//! keeps a connection pool per thread). On a multi-thread runtime the same request wakes other workers and
//! crosses threads; on a 2-core machine this layout used about 15 % less CPU per proxied request
//! (`docs/benchmarks.md`). State shared through the gateway (cache, budgets, rate limits, circuit breakers,
//! metrics) is the same for every thread, and so is the connection cap: the threads serve through clones of
//! one [`Server`], with the header, body and idle timeouts of its [`ConnectionLimits`].
//!
//! [`UpstreamClient`]: crate::http_client::UpstreamClient
//!
//! ```no_run
//! # async fn run(gateway: chitty_core::gateway::Gateway) -> std::io::Result<()> {
//! use chitty_providers::server::{ConnectionLimits, PerCoreServer, ServerOptions, router, shutdown_signal};
//!
//! let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
//! let server = PerCoreServer::bind("127.0.0.1:8080".parse().unwrap(), threads)?
//!     .with_limits(ConnectionLimits::default().with_max_connections(10_000));
//! println!("listening on {}", server.local_addr());
//! server.serve(router(gateway, ServerOptions::default()), shutdown_signal()).await
//! # }
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use axum::Router;
use chitty_core::serve::{ConnectionLimits, Server};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

/// Listening sockets bound to one address, one per serving thread.
#[derive(Debug)]
pub struct PerCoreServer {
    listeners: Vec<std::net::TcpListener>,
    local_addr: SocketAddr,
    limits: ConnectionLimits,
}

/// Connections waiting to be accepted, per socket.
const BACKLOG: i32 = 1024;

fn reuse_port_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

impl PerCoreServer {
    /// Binds `threads` sockets (at least one) to `addr`; with port 0 the first picks a port and the others
    /// join it.
    pub fn bind(addr: SocketAddr, threads: usize) -> io::Result<PerCoreServer> {
        let first = reuse_port_listener(addr)?;
        let local_addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..threads.max(1) {
            listeners.push(reuse_port_listener(local_addr)?);
        }
        Ok(PerCoreServer { listeners, local_addr, limits: ConnectionLimits::default() })
    }

    /// The timeouts and the connection cap (shared by every thread) to serve with; the default otherwise.
    pub fn with_limits(mut self, limits: ConnectionLimits) -> PerCoreServer {
        self.limits = limits;
        self
    }

    /// The address the sockets are bound to (with the port chosen when `addr` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many threads [`Self::serve`] starts.
    pub fn threads(&self) -> usize {
        self.listeners.len()
    }

    /// Serves `app` until `shutdown` resolves, then stops accepting and waits until every thread has finished
    /// its in-flight requests and streams. Connections get `TCP_NODELAY`, since SSE frames are small, and the
    /// [`ConnectionLimits`] of [`Self::with_limits`].
    ///
    /// Returns the first error of a serving thread; a thread that fails or panics stops the others.
    pub async fn serve(self, app: Router, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut threads = FuturesUnordered::new();
        let server = Server::new(self.limits);
        for (index, listener) in self.listeners.into_iter().enumerate() {
            let (app, mut stopped, server) = (app.clone(), stopped.clone(), server.clone());
            let (done, finished) = tokio::sync::oneshot::channel::<io::Result<()>>();
            std::thread::Builder::new().name(format!("chitty-http-{index}")).spawn(move || {
                let serve = move || -> io::Result<()> {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                    runtime.block_on(async move {
                        let listener = tokio::net::TcpListener::from_std(listener)?;
                        let signal = async move {
                            let _ = stopped.wait_for(|stop| *stop).await;
                        };
                        server.serve(listener, app, signal).await
                    })
                };
                let _ = done.send(serve());
            })?;
            threads.push(async move {
                finished.await.unwrap_or_else(|_| Err(io::Error::other("a server thread panicked")))
            });
        }
        let mut first_error = None;
        tokio::select! {
            () = shutdown => {}
            Some(result) = threads.next() => first_error = result.err().or_else(|| {
                Some(io::Error::other("a server thread stopped before shutdown"))
            }),
        }
        let _ = stop.send(true);
        while let Some(result) = threads.next().await {
            if let (Err(e), None) = (result, &first_error) {
                first_error = Some(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
