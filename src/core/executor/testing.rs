//! The one harness of the executor's unit tests: a real store (SQLite in a
//! temp dir), `TaskService` and `LogHub`, a temp git project `p`, and an
//! `Executor` running `FakeRunner`s, so the scheduler and the attempt are
//! tested without any agent CLI.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Executor, ExecutorConfig, ProjectTarget, ShutdownMode};
use crate::core::logs::LogHub;
use crate::core::model::{
    AgentSpec, AgentType, Execution, SubmitRequest, Task, TaskSpec, TaskState,
};
use crate::core::runner::{FakeRunner, Runner};
use crate::core::validate::TaskRules;
use crate::core::{Activity, TaskService};
use crate::sandbox::SandboxConfig;
use crate::store::Store;

/// How long a test waits for something before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

pub(crate) struct Harness {
    pub tasks: TaskService,
    pub shutdown: CancellationToken,
    fakes: HashMap<AgentType, Arc<FakeRunner>>,
    sandboxes: PathBuf,
    run: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// Runs git in `dir` with no user or system config; panics on failure.
fn git(dir: &Path, args: &[&str]) {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The config the tests start from: limits high enough not to matter, a
/// quick poll, backoff in seconds (a requeued task stays queued while the
/// test looks at it).
fn config(dir: &Path, project: &Path) -> ExecutorConfig {
    ExecutorConfig {
        max_concurrent: 4,
        agent_limits: HashMap::new(),
        cluster_limits: HashMap::new(),
        agent_models: HashMap::new(),
        projects: HashMap::from([(
            "p".to_string(),
            ProjectTarget {
                path: project.to_path_buf(),
                publish_remote: None,
                confinement: Default::default(),
                copy: Vec::new(),
                setup: None,
            },
        )]),
        sandbox: SandboxConfig {
            root: dir.join("sandboxes"),
            author_name: "claudomator".into(),
            author_email: "bot@claudomator.invalid".into(),
            keep_on_failure: false,
        },
        retry_base: Duration::from_secs(60),
        retry_max: Duration::from_secs(600),
        usage_limit_cooldown: Duration::from_secs(3600),
        blocked_timeout: None,
        poll_interval: Duration::from_millis(50),
        classify_timeout: Duration::from_secs(1),
        auto_models: HashMap::new(),
        server_id: "unit".into(),
        lease: Duration::from_secs(30),
        requeue_on_restart: true,
        shutdown: ShutdownMode::Requeue,
    }
}

impl Harness {
    /// A running executor with one fake runner per agent in `agents`.
    pub async fn start(agents: &[AgentType], configure: impl FnOnce(&mut ExecutorConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("project");
        std::fs::create_dir(&project).unwrap();
        git(&project, &["init", "--quiet", "-b", "trunk"]);
        std::fs::write(project.join("README.md"), "# demo\n").unwrap();
        git(&project, &["add", "--all"]);
        git(&project, &["commit", "--quiet", "-m", "initial"]);

        let mut config = config(dir.path(), &project);
        configure(&mut config);
        let store = Store::open_sqlite(&dir.path().join("db")).await.unwrap();
        let logs = LogHub::new(dir.path().join("logs")).unwrap();
        let rules = TaskRules {
            projects: vec!["p".into()],
            ..TaskRules::default()
        };
        let tasks = TaskService::new(store, rules, logs, Arc::new(Activity::default()))
            .with_sandboxes(config.sandbox.clone())
            .with_session_hold(config.lease);
        let fakes: HashMap<AgentType, Arc<FakeRunner>> = agents
            .iter()
            .map(|&agent| (agent, Arc::new(FakeRunner::new(agent))))
            .collect();
        let runners = fakes
            .values()
            .map(|fake| fake.clone() as Arc<dyn Runner>)
            .collect();
        let shutdown = CancellationToken::new();
        let executor = Executor::new(tasks.clone(), runners, config, shutdown.clone(), None);
        let run = Some(tokio::spawn(executor.run()));
        Harness {
            tasks,
            shutdown,
            fakes,
            sandboxes: dir.path().join("sandboxes"),
            run,
            _dir: dir,
        }
    }

    /// The project's repository (`p`, default branch `trunk`).
    pub fn project(&self) -> PathBuf {
        self._dir.path().join("project")
    }

    pub fn fake(&self, agent: AgentType) -> &Arc<FakeRunner> {
        &self.fakes[&agent]
    }

    /// Where the task's sandbox is (while it is kept).
    pub fn sandbox_of(&self, task: &Task) -> PathBuf {
        self.sandboxes.join(task.id.to_string())
    }

    /// Submits a task for `agent` in project `p`; `edit` adjusts the spec.
    pub async fn submit(&self, agent: AgentType, edit: impl FnOnce(&mut TaskSpec)) -> Task {
        let mut spec = TaskSpec {
            name: "test task".into(),
            instructions: "do the thing".into(),
            project: "p".into(),
            agent: AgentSpec {
                agent_type: agent.as_str().into(),
                ..AgentSpec::default()
            },
            ..TaskSpec::default()
        };
        edit(&mut spec);
        let request = SubmitRequest {
            spec,
            ..SubmitRequest::default()
        };
        self.tasks.submit(request).await.unwrap().0
    }

    pub async fn task(&self, task: &Task) -> Task {
        self.tasks.get(&task.id.to_string()).await.unwrap()
    }

    /// Waits until the task is in `state`; panics with where it is instead.
    pub async fn wait_for(&self, task: &Task, state: TaskState) -> Task {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let now = self.task(task).await;
            if now.state == state {
                return now;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {} is {} ({}), not {state}",
                task.id,
                now.state,
                now.state_reason
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The task's executions, oldest first.
    pub async fn executions(&self, task: &Task) -> Vec<Execution> {
        self.tasks
            .store()
            .list_executions(task.id, None, 100)
            .await
            .unwrap()
            .items
    }

    /// Stops the executor and waits for its loop to end.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(run) = self.run.take() {
            run.await.unwrap();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
