//! Wiring only: open the store, build the core services, serve gRPC, and
//! stop everything from one root cancellation token.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, DatabaseChoice, GithubCredentials};
use crate::core::ci::CiTriage;
use crate::core::codehost::{CodeHost, CodeHosts, RepoName};
use crate::core::elaborate::{ElaborateConfig, Elaborator};
use crate::core::events::EventSink;
use crate::core::executor::Executor;
use crate::core::llm::ChatModel;
use crate::core::logs::LogHub;
use crate::core::model::{AgentType, PullMode};
use crate::core::pulls::{PullProject, Pulls};
use crate::core::status::{StatusConfig, StatusService};
use crate::core::{Activity, TaskService};
use crate::core::{recovery, shared_logs};
use crate::data_dir::{DataDirLock, create_private_dir};
use crate::github::GithubClient;
use crate::http::GithubHook;
use crate::runners::Runner;
use crate::runners::claude::ClaudeRunner;
use crate::runners::codex::CodexRunner;
use crate::runners::gemini::GeminiRunner;
use crate::runners::local::LocalRunner;
use crate::store::Store;

/// A started server. Dropping it does not stop it; call [`Running::stop`].
pub struct Running {
    pub grpc_addr: SocketAddr,
    /// Where the HTTP shim (GitHub webhooks, `/healthz`) listens.
    pub http_addr: SocketAddr,
    pub database: String,
    tasks: TaskService,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
    http: JoinHandle<anyhow::Result<()>>,
    executor: JoinHandle<()>,
    /// The webhook notifier (a no-op task when notifications are off).
    notifier: JoinHandle<()>,
    local_model: Option<Arc<dyn ChatModel>>,
    /// The code host of each project with a GitHub repository and
    /// credentials.
    code_hosts: CodeHosts,
    /// Held until the server has stopped (dropped with it).
    _data_dir_lock: DataDirLock,
}

impl Running {
    /// The core task service this server runs (for in-process benchmarks and
    /// tools; clients use gRPC).
    pub fn tasks(&self) -> &TaskService {
        &self.tasks
    }

    /// The code host (GitHub client) of each project that has one.
    pub fn code_hosts(&self) -> &CodeHosts {
        &self.code_hosts
    }

    /// The local model (`[local_model]`), when one is configured.
    pub fn local_model(&self) -> Option<Arc<dyn ChatModel>> {
        self.local_model.clone()
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
        let http_served = self.http.await.context("http shim task panicked");
        self.executor.await.context("executor task panicked")?;
        self.notifier.await.context("notifier task panicked")?;
        served??;
        http_served?
    }
}

/// Pull requests, for the projects with a GitHub repository and a host;
/// None when there is none. A project that asks for pull requests without
/// one is named in the log (its tasks wait in READY for a person).
fn pull_requests(
    config: &Config,
    hosts: &CodeHosts,
    tasks: &TaskService,
    server_id: &str,
) -> Option<Pulls> {
    let mut projects = HashMap::new();
    for p in &config.projects {
        match hosts.get(&p.name) {
            Some(host) => {
                let project = PullProject {
                    path: p.path.clone(),
                    repo: host.repo.clone(),
                    host: host.host.clone(),
                };
                projects.insert(p.name.clone(), project);
            }
            _ if p.pull_requests.is_some_and(|m| m != PullMode::Off) => warn!(
                project = %p.name,
                "pull_requests is set but the project has no GitHub repository (`github`) or \
                 credentials: its tasks wait in READY for a person instead"
            ),
            _ => {}
        }
    }
    if projects.is_empty() {
        return None;
    }
    Some(Pulls::new(
        tasks.clone(),
        config.pull_requests.clone(),
        projects,
        server_id.to_string(),
    ))
}

/// One runner per agent (every `AgentType` but `auto`), from its config
/// section.
fn build_runners(config: &Config, local_model: Option<Arc<dyn ChatModel>>) -> Vec<Arc<dyn Runner>> {
    let spec = |agent: AgentType| {
        let section = config
            .agents
            .section(agent)
            .expect("an agent run as a CLI has a config section");
        section.command_spec(agent, &config.data_dir)
    };
    let prices = Arc::new(config.prices.clone());
    AgentType::ALL
        .iter()
        .filter_map(|&agent| -> Option<Arc<dyn Runner>> {
            Some(match agent {
                AgentType::Auto => return None,
                AgentType::Claude => Arc::new(ClaudeRunner::new(spec(agent), prices.clone())),
                AgentType::Gemini => Arc::new(GeminiRunner::new(spec(agent), prices.clone())),
                AgentType::Codex => Arc::new(CodexRunner::new(spec(agent), prices.clone())),
                AgentType::Local => Arc::new(LocalRunner::new(
                    local_model.clone(),
                    config.local_model.max_tokens,
                    local_credentials(config),
                )),
            })
        })
        .collect()
}

/// Where the local model's API key comes from, for `doctor`.
fn local_credentials(config: &Config) -> String {
    match config.local_model.api_key_env.as_str() {
        "" => "no API key (none configured)".into(),
        var if std::env::var(var).is_ok_and(|v| !v.is_empty()) => format!("API key from {var}"),
        var => format!("API key variable {var} is not set"),
    }
}

pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = match config.database() {
        DatabaseChoice::EmbeddedSqlite(dir) => Store::open_sqlite(&dir).await?,
        DatabaseChoice::Url(url) => Store::open(&url).await?,
    };
    Ok(store)
}

/// The code host of each project with a `github = "owner/name"` and
/// credentials: one client per distinct set of credentials, shared.
pub fn build_code_hosts(config: &Config) -> anyhow::Result<CodeHosts> {
    let max_wait = config.github.max_rate_limit_wait();
    let mut clients: HashMap<GithubCredentials, Arc<dyn CodeHost>> = HashMap::new();
    let mut hosts = CodeHosts::new();
    for project in &config.projects {
        let Some(repo) = project.github.as_deref().and_then(RepoName::parse) else {
            continue;
        };
        let Some(credentials) = config.github_credentials(project)? else {
            continue;
        };
        let host = match clients.get(&credentials) {
            Some(host) => host.clone(),
            None => {
                let client = GithubClient::from_config(&credentials, max_wait)
                    .with_context(|| format!("project {}: GitHub credentials", project.name))?;
                let host: Arc<dyn CodeHost> = Arc::new(client);
                clients.insert(credentials, host.clone());
                host
            }
        };
        hosts.insert(project.name.clone(), repo, host);
    }
    Ok(hosts)
}

/// Opens the store, binds the listener and starts serving in the background.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let code_hosts = build_code_hosts(&config)?;
    start_with_hosts(config, code_hosts).await
}

/// `start`, with these code hosts instead of those the config's
/// credentials make (tests: a host of their own).
pub async fn start_with_hosts(config: Config, code_hosts: CodeHosts) -> anyhow::Result<Running> {
    create_private_dir(&config.data_dir)?;
    let data_dir_lock = DataDirLock::acquire(&config.data_dir)?;
    let store = open_store(&config).await?;
    let logs = LogHub::new(config.data_dir.join("logs"))
        .with_context(|| format!("cannot create {}", config.data_dir.join("logs").display()))?;
    let executor_config = config.executor_config();
    let server_id = executor_config.server_id.clone();
    let sandboxes = executor_config.sandbox.clone();
    // Several servers on one database share their logs through it.
    let share_logs = config.shares_logs();
    let logs_shared = CancellationToken::new();
    let sharing = share_logs.then(|| shared_logs::start(&logs, store.clone(), logs_shared.clone()));
    let tasks = TaskService::new(
        store.clone(),
        config.task_rules(),
        logs,
        Arc::new(Activity::default()),
    )
    .with_sandboxes(executor_config.sandbox.clone())
    .with_session_hold(executor_config.lease);
    let tasks = if share_logs {
        tasks.with_shared_logs()
    } else {
        tasks
    };
    // Changes are announced from the first one on, recovery's too.
    let first_change = tasks
        .bus()
        .current()
        .await
        .context("cannot read the change log")?;
    let shutdown = CancellationToken::new();
    let notify_settings = config.notifications.settings()?;
    let (tasks, notify_events) = match &notify_settings {
        Some(settings) => {
            let (sink, events) = EventSink::channel(settings.queue, settings.events.clone());
            let bus = tasks.bus().clone();
            crate::core::events::forward(bus, sink.clone(), first_change, shutdown.clone());
            (tasks.with_events(sink), Some(events))
        }
        None => (tasks, None),
    };

    let listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (`listen`; another server there? choose another with --listen)",
            config.listen
        )
    })?;
    let grpc_addr = listener.local_addr()?;
    let http_listener = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (`http_listen`, the webhook shim; another server there? \
                 choose another with --http-listen, e.g. 127.0.0.1:0)",
                config.http_listen
            )
        })?;
    let http_addr = http_listener.local_addr()?;

    // The local model, when [local_model] names an endpoint: built once,
    // shared by the local runner, the executor (classify, summaries), the
    // status report and Elaborate.
    let local_model = crate::llm::OpenAiClient::from_config(&config.local_model)
        .map(|client| Arc::new(client) as Arc<dyn ChatModel>);
    let runners = build_runners(&config, local_model.clone());
    let mut missing = Vec::new();
    for runner in &runners {
        match runner.unavailable() {
            None => info!(agent = %runner.agent(), "agent available"),
            Some(why) => missing.push(format!("{} ({why})", runner.agent())),
        }
    }
    if config.executor.enabled && !missing.is_empty() {
        warn!(
            "agents unavailable here: {}; their tasks are accepted but fail unless another \
             server sharing the database runs them (`claudomator doctor` says more)",
            missing.join("; ")
        );
    }
    if config.executor.enabled {
        match crate::runners::confine::os_sandbox().await {
            Ok(bwrap) => info!(bwrap = %bwrap.display(), "agents run in an OS sandbox"),
            Err(why) => warn!(
                "agents run WITHOUT an OS sandbox: {why}; they see every file this server sees \
                 (isolation = \"sandbox\" makes their tasks fail instead)"
            ),
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
            server_id: server_id.clone(),
            lease: executor_config.lease,
            prices: Arc::new(config.prices.clone()),
            estimated_models: config
                .agents
                .sections()
                .into_iter()
                .filter(|(agent, _)| matches!(agent, AgentType::Gemini | AgentType::Codex))
                .map(|(agent, section)| (agent, section.model.clone()))
                .collect(),
        },
    )
    .with_code_hosts(code_hosts.clone());
    let executor = Executor::new(
        tasks.clone(),
        runners.clone(),
        executor_config,
        shutdown.clone(),
        local_model.clone(),
    );
    if config.executor.enabled {
        let by_agent = runners.iter().map(|r| (r.agent(), r.clone())).collect();
        recovery::reconcile(
            &tasks,
            &by_agent,
            &config.data_dir,
            config.executor.on_restart == crate::config::OnRestart::Requeue,
            &server_id,
        )
        .await
        .context("cannot reconcile what the previous run left")?;
    }
    let executor = if config.executor.enabled {
        tokio::spawn(async move {
            executor.run().await;
            // The last lines the agents wrote go into the store too.
            logs_shared.cancel();
            if let Some(sharing) = sharing {
                let _ = sharing.await;
            }
        })
    } else {
        info!("executor disabled: tasks are accepted and served, not run");
        tokio::spawn(async {})
    };

    let notifier = match (notify_settings, notify_events) {
        (Some(settings), Some(events)) => {
            crate::notify::start(settings, tasks.clone(), events, shutdown.clone())
                .context("cannot start the notifier")?
        }
        _ => tokio::spawn(async {}),
    };

    let stop = shutdown.clone();
    let elaborator = Elaborator::new(
        config.task_rules(),
        local_model.clone(),
        runners.clone(),
        ElaborateConfig::new(
            config.data_dir.join("elaborate"),
            config.executor_config().agent_models,
        ),
        shutdown.clone(),
    );

    let triage = CiTriage::new(
        tasks.clone(),
        local_model.clone(),
        config.github.triage_settings(),
    );
    let pulls = pull_requests(&config, &code_hosts, &tasks, &server_id);
    if let Some(pulls) = &pulls {
        pulls.start(first_change, shutdown.clone());
    }
    let hook = Arc::new(GithubHook::new(&config, triage).with_pulls(pulls.clone()));
    let http = tokio::spawn(crate::http::serve(
        http_listener,
        hook,
        config.http.limits(),
        shutdown.clone(),
    ));

    let reviews = crate::core::review::Reviews::new(
        tasks.clone(),
        config
            .projects
            .iter()
            .map(|p| (p.name.clone(), p.path.clone()))
            .collect(),
        sandboxes,
    );
    let server = tokio::spawn(crate::grpc::serve(
        listener,
        crate::grpc::Api::new(tasks.clone(), status, elaborator, reviews, stop.clone())
            .with_pulls(pulls),
        config.auth.tokens.clone(),
        config.cors_origins.clone(),
        stop,
    ));

    info!(
        grpc = %grpc_addr,
        database = %store.description(),
        projects = %config.projects.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(","),
        auth = if config.auth.tokens.is_empty() { "off" } else { "bearer" },
        cors = %if config.cors_origins.is_empty() { "off".to_string() } else { config.cors_origins.join(",") },
        http = %http_addr,
        "claudomator listening on {grpc_addr}"
    );
    info!(
        "web board at {} (open it in a browser)",
        board_url(grpc_addr)
    );
    if config.projects.is_empty() {
        warn!(
            "no project: serve did not start inside a git repository and the config names no \
             [[projects]], so every task is refused until one is configured (start serve in \
             the repository agents should work on, or add [[projects]] name and path)"
        );
    }
    Ok(Running {
        grpc_addr,
        http_addr,
        database: store.description().to_string(),
        tasks,
        shutdown,
        server,
        http,
        executor,
        notifier,
        local_model,
        code_hosts,
        _data_dir_lock: data_dir_lock,
    })
}

/// Where a browser on this machine opens the board: the gRPC address, with
/// a wildcard listen address read as loopback.
pub fn board_url(grpc_addr: SocketAddr) -> String {
    let ip = match grpc_addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}/", SocketAddr::new(ip, grpc_addr.port()))
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
