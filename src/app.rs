//! Wiring only: open the store, build the core services, serve gRPC, and
//! stop everything from one root cancellation token.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{Config, DatabaseChoice};
use crate::core::TaskService;
use crate::store::Store;

/// A started server. Dropping it does not stop it; call [`Running::stop`].
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub database: String,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// The root token: cancelling it stops the server.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops taking calls, lets calls in flight finish, and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server stops (after the token is cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.server.await.context("server task panicked")?
    }
}

pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = match config.database() {
        DatabaseChoice::EmbeddedSqlite(dir) => Store::open_sqlite(&dir).await?,
        DatabaseChoice::Url(url) => Store::open(&url).await?,
    };
    Ok(store)
}

/// Opens the store, binds the listener and starts serving in the background.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let store = open_store(&config).await?;
    let tasks = TaskService::new(store.clone(), config.task_rules());

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let grpc_addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();

    let stop = shutdown.clone();
    let server = tokio::spawn(crate::grpc::serve(
        listener,
        tasks,
        config.auth.tokens.clone(),
        async move { stop.cancelled().await },
    ));

    info!(
        grpc = %grpc_addr,
        database = %store.description(),
        projects = %config.projects.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(","),
        auth = if config.auth.tokens.is_empty() { "off" } else { "bearer" },
        "claudomator listening on {grpc_addr}"
    );
    Ok(Running {
        grpc_addr,
        database: store.description().to_string(),
        shutdown,
        server,
    })
}

/// Runs until Ctrl-C or SIGTERM, then shuts down cleanly.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    let token = running.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down");
        token.cancel();
    });
    running.wait().await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let sigterm = async {
            match term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = sigterm => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
