//! Wiring only: open the store, build the core services, serve gRPC, and
//! stop everything from one root cancellation token.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use std::sync::Arc;

use crate::config::{Config, DatabaseChoice};
use crate::core::executor::Executor;
use crate::core::logs::LogHub;
use crate::core::model::AgentType;
use crate::core::recovery;
use crate::core::status::{StatusConfig, StatusService};
use crate::core::{Activity, TaskService};
use crate::runners::Runner;
use crate::runners::claude::ClaudeRunner;
use crate::runners::codex::CodexRunner;
use crate::runners::gemini::GeminiRunner;
use crate::store::Store;

/// A started server. Dropping it does not stop it; call [`Running::stop`].
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub database: String,
    tasks: TaskService,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
    executor: JoinHandle<()>,
}

impl Running {
    /// The core task service this server runs (for in-process benchmarks and
    /// tools; clients use gRPC).
    pub fn tasks(&self) -> &TaskService {
        &self.tasks
    }

    /// The root token: cancelling it stops the server.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops taking calls, lets calls in flight finish, and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server stops (after the token is cancelled): the
    /// gRPC server has closed and the executor has stopped its agents.
    pub async fn wait(self) -> anyhow::Result<()> {
        let served = self.server.await.context("server task panicked");
        self.shutdown.cancel();
        self.executor.await.context("executor task panicked")?;
        served?
    }
}

/// One runner per agent, from its config section.
fn build_runners(config: &Config) -> Vec<Arc<dyn Runner>> {
    let spec = |agent: AgentType| {
        let section = match agent {
            AgentType::Gemini => &config.agents.gemini,
            AgentType::Codex => &config.agents.codex,
            _ => &config.agents.claude,
        };
        section.command_spec(agent, &config.data_dir)
    };
    let prices = Arc::new(config.prices.clone());
    vec![
        Arc::new(ClaudeRunner::new(spec(AgentType::Claude))),
        Arc::new(GeminiRunner::new(spec(AgentType::Gemini), prices.clone())),
        Arc::new(CodexRunner::new(spec(AgentType::Codex), prices)),
    ]
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
    let logs = LogHub::new(config.data_dir.join("logs"))
        .with_context(|| format!("cannot create {}", config.data_dir.join("logs").display()))?;
    let executor_config = config.executor_config();
    let tasks = TaskService::new(
        store.clone(),
        config.task_rules(),
        logs,
        Arc::new(Activity::default()),
    )
    .with_sandboxes(executor_config.sandbox.clone());

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let grpc_addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();

    let runners = build_runners(&config);
    for runner in &runners {
        match runner.unavailable() {
            None => info!(agent = %runner.agent(), "agent available"),
            Some(why) => info!(agent = %runner.agent(), "agent unavailable: {why}"),
        }
    }
    let status = StatusService::new(
        tasks.clone(),
        runners.clone(),
        StatusConfig {
            data_dir: config.data_dir.clone(),
            executor_enabled: config.executor.enabled,
            max_concurrent: executor_config.max_concurrent,
            agent_limits: executor_config.agent_limits.clone(),
        },
    );
    let executor = Executor::new(
        tasks.clone(),
        runners.clone(),
        executor_config,
        shutdown.clone(),
    );
    if config.executor.enabled {
        let by_agent = runners.iter().map(|r| (r.agent(), r.clone())).collect();
        recovery::reconcile(
            &tasks,
            &by_agent,
            &config.data_dir.join("sandboxes"),
            config.executor.on_restart == "requeue",
        )
        .await
        .context("cannot reconcile what the previous run left")?;
    }
    let executor = if config.executor.enabled {
        tokio::spawn(executor.run())
    } else {
        info!("executor disabled: tasks are accepted and served, not run");
        tokio::spawn(async {})
    };

    let stop = shutdown.clone();
    let server = tokio::spawn(crate::grpc::serve(
        listener,
        tasks.clone(),
        status,
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
        tasks,
        shutdown,
        server,
        executor,
    })
}

/// Runs until Ctrl-C or SIGTERM, then shuts down cleanly.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Listen for signals before anything starts, so a SIGTERM that comes
    // right after the "listening" line is not the default (fatal) action.
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let running = start(config).await?;
    let token = running.shutdown_token();
    tokio::spawn(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        info!("shutting down");
        token.cancel();
    });
    running.wait().await
}
