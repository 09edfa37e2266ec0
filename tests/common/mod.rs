//! The one harness every integration test uses: a real server on
//! `127.0.0.1:0` with a temporary data dir and a temporary git project,
//! reached over real gRPC.
#![allow(dead_code)]

pub mod github_api;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use claudomator::app::{self, Running};
use claudomator::config::{Config, ProjectConfig};
use claudomator::proto as pb;
use claudomator::proto::claudomator_service_client::ClaudomatorServiceClient;
use tempfile::TempDir;
use tonic::transport::Channel;

pub struct TestServer {
    pub addr: SocketAddr,
    /// The HTTP shim (GitHub webhooks, /healthz).
    pub http_addr: SocketAddr,
    pub config: Config,
    running: Option<Running>,
    /// Kept so the directories live as long as the server.
    _dirs: std::sync::Arc<TempDir>,
}

/// A config for tests: loopback on a free port, temp data dir, one project
/// (`demo`) and a second (`other`), no auth, and the executor off (tests of
/// the executor turn it on), so API tests see tasks as they submitted them.
pub fn test_config(dirs: &Path) -> Config {
    let demo = dirs.join("demo");
    let other = dirs.join("other");
    for dir in [&demo, &other] {
        init_git_repo(dir);
    }
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dirs.join("data"),
        projects: vec![
            ProjectConfig::new("demo", demo),
            ProjectConfig {
                github: Some("acme/other".into()),
                ..ProjectConfig::new("other", other)
            },
        ],
        executor: claudomator::config::ExecutorSection {
            enabled: false,
            ..Default::default()
        },
        ..Config::default()
    }
}

/// A git repository with one commit on branch `trunk` (not `master`, so
/// nothing may assume it), independent of any global git config.
pub fn init_git_repo(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("README.md"), "# demo\n").unwrap();
    for args in [
        &["init", "-q", "-b", "trunk"][..],
        &["add", "README.md"],
        &[
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-q",
            "-m",
            "initial",
        ],
    ] {
        let status = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .status()
            .expect("git runs");
        assert!(status.success(), "git {args:?} failed");
    }
}

pub async fn start_server() -> TestServer {
    start_server_with(|_| {}).await
}

/// A server with its executor on (polling every 100 ms) whose `local`
/// agent is the OpenAI-compatible model at `endpoint` (a scripted one), not
/// retried; `adjust` changes the rest.
pub async fn start_local_model_server(
    endpoint: String,
    adjust: impl FnOnce(&mut Config),
) -> TestServer {
    start_server_with(move |c| {
        c.executor.enabled = true;
        c.executor.poll_interval = "100ms".into();
        c.local_model.endpoint = endpoint;
        c.local_model.max_retries = 0;
        adjust(c);
    })
    .await
}

pub async fn start_server_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
    let (config, dirs) = adjusted_config(adjust).await;
    boot(config, dirs).await
}

/// The test config in fresh directories, adjusted, on the test database,
/// validated.
async fn adjusted_config(adjust: impl FnOnce(&mut Config)) -> (Config, std::sync::Arc<TempDir>) {
    let dirs = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(dirs.path());
    adjust(&mut config);
    if config.database_url.is_empty() {
        config.database_url = test_database().await;
    }
    config.validate().expect("test config is valid");
    (config, dirs)
}

/// The database a test server opens: empty (the embedded SQLite in its data
/// dir) unless `CLAUDOMATOR_TEST_POSTGRES` names a PostgreSQL server (an
/// admin URL, as `scripts/pg-cluster start` prints); then a fresh database
/// on that server, so the same tests run on both.
pub async fn test_database() -> String {
    match std::env::var("CLAUDOMATOR_TEST_POSTGRES") {
        Ok(admin) => create_postgres_database(&admin).await,
        Err(_) => String::new(),
    }
}

/// A fresh PostgreSQL database, for tests that need one whatever the
/// suite runs on (several servers on one database): on the server
/// `CLAUDOMATOR_TEST_POSTGRES` names, else on the project's throwaway
/// cluster (`scripts/pg-cluster start`, which installs PostgreSQL if it is
/// missing and returns at once if the cluster is up).
pub async fn postgres_database() -> String {
    static ADMIN: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    let admin = ADMIN.get_or_init(postgres_admin).await;
    create_postgres_database(admin).await
}

async fn postgres_admin() -> String {
    match std::env::var("CLAUDOMATOR_TEST_POSTGRES") {
        Ok(admin) => admin,
        Err(_) => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-cluster");
            let out = tokio::process::Command::new("bash")
                .arg(script)
                .arg("start")
                .output()
                .await
                .expect("runs scripts/pg-cluster");
            assert!(
                out.status.success(),
                "scripts/pg-cluster start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
    }
}

async fn create_postgres_database(admin: &str) -> String {
    use sea_orm::ConnectionTrait;
    let name = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    let db = sea_orm::Database::connect(admin)
        .await
        .expect("the test PostgreSQL server answers");
    db.execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("creates a test database");
    db.close().await.ok();
    match admin.rsplit_once('/') {
        Some((server, rest)) => {
            let query = rest.split_once('?').map(|(_, q)| format!("?{q}"));
            format!("{server}/{name}{}", query.unwrap_or_default())
        }
        None => panic!("not a PostgreSQL URL: {admin}"),
    }
}

/// `start_server_with`, with these code hosts (by project) instead of
/// those the config's credentials make.
pub async fn start_server_with_hosts(
    adjust: impl FnOnce(&mut Config),
    hosts: claudomator::core::codehost::CodeHosts,
) -> TestServer {
    let (config, dirs) = adjusted_config(adjust).await;
    let running = app::start_with_hosts(config.clone(), hosts)
        .await
        .expect("server starts");
    served(config, dirs, running)
}

async fn boot(config: Config, dirs: std::sync::Arc<TempDir>) -> TestServer {
    let running = app::start(config.clone()).await.expect("server starts");
    served(config, dirs, running)
}

fn served(config: Config, dirs: std::sync::Arc<TempDir>, running: Running) -> TestServer {
    TestServer {
        addr: running.grpc_addr,
        http_addr: running.http_addr,
        config,
        running: Some(running),
        _dirs: dirs,
    }
}

impl TestServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .expect("connects")
    }

    pub async fn client(&self) -> ClaudomatorServiceClient<Channel> {
        ClaudomatorServiceClient::new(self.channel().await)
    }

    /// Opens the server's database directly (SQLite or PostgreSQL, as the
    /// server does), for tests that record what only the executor writes.
    pub async fn open_store(&self) -> claudomator::store::Store {
        app::open_store(&self.config).await.expect("store opens")
    }

    /// Stops the server and waits until it has let go of its listener.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("clean shutdown");
        }
    }

    /// Stops the server and starts a new one on the same data dir and config
    /// (on a new port).
    pub async fn restart(mut self) -> TestServer {
        self.stop().await;
        let dirs = self._dirs.clone();
        boot(self.config.clone(), dirs).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown_token().cancel();
        }
    }
}

/// A minimal valid spec for project `demo`.
pub fn spec(instructions: &str) -> pb::TaskSpec {
    pb::TaskSpec {
        instructions: instructions.into(),
        project: "demo".into(),
        ..Default::default()
    }
}

/// [`spec`] for one agent.
pub fn agent_spec(agent: pb::AgentType, instructions: &str) -> pb::TaskSpec {
    pb::TaskSpec {
        agent: Some(pb::AgentSettings {
            r#type: agent as i32,
            ..Default::default()
        }),
        ..spec(instructions)
    }
}

pub fn submit_request(spec: pb::TaskSpec) -> pb::SubmitTaskRequest {
    pb::SubmitTaskRequest {
        spec: Some(spec),
        ..Default::default()
    }
}

/// Every task on the server, newest first, following pages.
pub async fn all_tasks(client: &mut ClaudomatorServiceClient<Channel>) -> Vec<pb::Task> {
    let mut tasks = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_tasks(pb::ListTasksRequest {
                page_size: 100,
                page_token,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        tasks.extend(page.tasks);
        if page.next_page_token.is_empty() {
            return tasks;
        }
        page_token = page.next_page_token;
    }
}

/// Live processes (zombies excluded) whose working directory is inside
/// `dir`, as "pid: command line": how tests check that no agent process
/// outlived its task.
pub fn processes_in(dir: &Path) -> Vec<String> {
    processes_where(|proc| {
        std::fs::read_link(proc.join("cwd")).is_ok_and(|cwd| cwd.starts_with(dir))
    })
}

/// Live processes (zombies excluded) whose `/proc/<pid>` directory
/// `matches`, as "pid: command line".
pub fn processes_where(matches: impl Fn(&Path) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'));
        if matches(&entry.path()) && !zombie {
            let cmdline = std::fs::read_to_string(entry.path().join("cmdline")).unwrap_or_default();
            found.push(format!("{name}: {}", cmdline.replace('\0', " ")));
        }
    }
    found
}

pub type Client = ClaudomatorServiceClient<Channel>;

/// Submits a spec; panics on an error.
pub async fn submit(client: &mut Client, spec: pb::TaskSpec) -> pb::Task {
    client
        .submit_task(submit_request(spec))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap()
}

pub async fn get(client: &mut Client, id: &str) -> pb::Task {
    client
        .get_task(pb::GetTaskRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap()
}

/// Polls until the task is in one of `states` (90 s at most).
/// The states a task stops in until someone acts (its run has ended).
pub const ENDED: &[pb::TaskState] = &[
    pb::TaskState::Completed,
    pb::TaskState::Failed,
    pb::TaskState::Cancelled,
    pb::TaskState::TimedOut,
    pb::TaskState::BudgetExceeded,
    pb::TaskState::Ready,
];

/// Waits for the task's run to end ([`ENDED`]), and asserts it COMPLETED
/// (naming the reason when it did not).
pub async fn wait_completed(client: &mut Client, id: &str) -> pb::Task {
    let done = wait_for(client, id, ENDED).await;
    assert_eq!(
        done.state,
        pb::TaskState::Completed as i32,
        "task {id}: {}",
        done.state_reason
    );
    done
}

pub async fn wait_for(client: &mut Client, id: &str, states: &[pb::TaskState]) -> pb::Task {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let task = get(client, id).await;
        if states.iter().any(|s| *s as i32 == task.state) {
            return task;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task {id} stuck in {:?} ({})",
            pb::TaskState::try_from(task.state),
            task.state_reason
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A task's executions, oldest first.
pub async fn executions(client: &mut Client, task_id: &str) -> Vec<pb::Execution> {
    client
        .list_executions(pb::ListExecutionsRequest {
            task_id: task_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .executions
}

/// The endpoint of the real local model (llama.cpp serving a tiny model on
/// loopback), started by `../shared/tools/local-llm start`: idempotent,
/// prints the endpoint (the first run installs it, which takes minutes).
/// `CLAUDOMATOR_TEST_LOCAL_LLM` names another endpoint instead. Started
/// once per test binary.
pub fn local_llm_endpoint() -> String {
    static ENDPOINT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ENDPOINT
        .get_or_init(|| {
            if let Ok(endpoint) = std::env::var("CLAUDOMATOR_TEST_LOCAL_LLM") {
                return endpoint;
            }
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/local-llm");
            let start = || {
                std::process::Command::new(&script)
                    .arg("start")
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()))
            };
            // A busy llama.cpp (one request at a time) can miss the script's
            // 2 s check that it is up, which then reads as "port taken": ask
            // it ourselves, with time to answer.
            let out = start();
            if !out.status.success() {
                let port = std::env::var("LOCAL_LLM_PORT").unwrap_or_else(|_| "18080".into());
                let endpoint = format!("http://127.0.0.1:{port}/v1");
                let models = std::process::Command::new("curl")
                    .args(["-sf", "-m", "60", &format!("{endpoint}/models")])
                    .output();
                if models.is_ok_and(|m| String::from_utf8_lossy(&m.stdout).contains("SmolLM2")) {
                    return endpoint;
                }
            }
            assert!(
                out.status.success(),
                "{} start failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .clone()
}

/// One test at a time talks to the real local model: llama.cpp's server
/// answers one request at a time and cuts a running stream short when
/// another comes in, so tests of one binary running in parallel would
/// interrupt each other. Hold the guard for as long as the test uses it.
pub async fn real_model_turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}
