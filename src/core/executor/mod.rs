//! The executor: takes runnable tasks and runs each attempt in a git
//! sandbox through its runner. This file owns the `Executor` itself, its
//! configuration and the scheduling loop (`run`); the rest is split by job:
//!
//! - `scheduler`: what to start (dependencies, blocked expiry, limits,
//!   fair candidate selection, claims, the `auto` choice);
//! - `cluster`: membership among servers sharing the database (leases,
//!   announcements, set-aside marks, orphan reclaim, sandbox sweep);
//! - `attempt`: one attempt, sandbox → runner → commit → deliver → record;
//! - `decide`: the pure decision of what an outcome means for the task;
//! - `protocol`: what the agent is told (the system prompt, each attempt's
//!   prompt) and how it asks a question.
//!
//! Cancel, timeout and shutdown all go through one cancel token per
//! attempt, which ends the agent's whole process group.

mod attempt;
mod cluster;
mod decide;
mod protocol;
mod scheduler;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::llm::ChatModel;
use super::model::{AgentType, now_millis};
use super::runner::Runner;
use super::tasks::TaskService;
use crate::sandbox::SandboxConfig;

pub use protocol::{QUESTION_FILE, SYSTEM_PROMPT};

/// What to do with running agents when the server stops (`[executor]
/// shutdown`: "requeue" or "finish").
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShutdownMode {
    /// Stop them and put their tasks back in the queue.
    Requeue,
    /// Let them finish, taking no new work.
    Finish,
}

#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    pub max_concurrent: usize,
    /// Per-agent caps; an agent not named is capped by `max_concurrent`.
    pub agent_limits: HashMap<AgentType, usize>,
    /// Per-agent caps over all servers sharing the database.
    pub cluster_limits: HashMap<AgentType, usize>,
    /// The default model of each agent, when a task names none.
    pub agent_models: HashMap<AgentType, String>,
    /// Project name to where it lives and where its work goes.
    pub projects: HashMap<String, ProjectTarget>,
    pub sandbox: SandboxConfig,
    /// First rate-limit backoff; doubles per attempt up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long an agent whose usage quota is spent is set aside, when it
    /// does not say when the quota resets.
    pub usage_limit_cooldown: Duration,
    /// A BLOCKED task unanswered this long is TIMED_OUT; None waits forever.
    pub blocked_timeout: Option<Duration>,
    /// How often the queue is looked at when nothing wakes the executor.
    pub poll_interval: Duration,
    /// How long the local model may take to choose an `auto` task's agent.
    pub classify_timeout: Duration,
    /// Models the classifier may give each agent, its default first.
    pub auto_models: HashMap<AgentType, Vec<String>>,
    /// This server's name on the claims it holds and the executions it runs.
    pub server_id: String,
    /// How long a claim holds unless renewed; renewed every third of it.
    pub lease: Duration,
    /// Tasks of a dead server (or of this one before a restart) are
    /// requeued within their attempt limit; false fails them.
    pub requeue_on_restart: bool,
    pub shutdown: ShutdownMode,
}

#[derive(Clone, Debug)]
pub struct ProjectTarget {
    pub path: PathBuf,
    /// Rebase finished branches onto the default branch and push them here.
    pub publish_remote: Option<String>,
    /// The project's isolation and network choices for its agents.
    pub confinement: crate::core::runner::Confinement,
    /// Untracked files copied into each new sandbox (globs).
    pub copy: Vec<String>,
    /// Run in each new sandbox before the agent.
    pub setup: Option<crate::core::runner::Setup>,
}

pub struct Executor {
    tasks: TaskService,
    runners: HashMap<AgentType, Arc<dyn Runner>>,
    config: ExecutorConfig,
    shutdown: CancellationToken,
    /// The local model: chooses the agent of `auto` tasks and writes the
    /// summaries agents leave out. None: rules decide, summaries stay empty.
    local_model: Option<Arc<dyn ChatModel>>,
    /// The agents the other live servers on this database can run: a task
    /// for one of them that this server cannot run is left to them.
    elsewhere: std::sync::Mutex<Vec<AgentType>>,
}

/// Preference order for `auto` until a classifier picks: every agent but
/// `auto` (a test checks it against `AgentType::ALL`).
const AUTO_ORDER: [AgentType; 4] = [
    AgentType::Claude,
    AgentType::Codex,
    AgentType::Gemini,
    AgentType::Local,
];

impl Executor {
    pub fn new(
        tasks: TaskService,
        runners: Vec<Arc<dyn Runner>>,
        config: ExecutorConfig,
        shutdown: CancellationToken,
        local_model: Option<Arc<dyn ChatModel>>,
    ) -> Arc<Executor> {
        Arc::new(Executor {
            tasks,
            runners: runners.into_iter().map(|r| (r.agent(), r)).collect(),
            config,
            shutdown,
            local_model,
            elsewhere: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The scheduling loop; returns after shutdown, once running attempts
    /// have stopped (or finished, per the shutdown mode).
    pub async fn run(self: Arc<Self>) {
        let mut attempts = JoinSet::new();
        let activity = self.tasks.activity().clone();
        let attempts_token = match self.config.shutdown {
            ShutdownMode::Requeue => self.shutdown.child_token(),
            ShutdownMode::Finish => CancellationToken::new(),
        };
        // Leases are renewed until the last attempt has ended, after the
        // scheduling loop stops.
        let leases_done = CancellationToken::new();
        let heartbeat = tokio::spawn(self.clone().renew_leases(leases_done.clone()));
        let mut next_reap = tokio::time::Instant::now();
        let mut next_marks = tokio::time::Instant::now();
        loop {
            // Not on every wake-up (each submit wakes the loop): once a poll.
            if tokio::time::Instant::now() >= next_marks {
                next_marks = tokio::time::Instant::now() + self.config.poll_interval;
                if let Err(e) = self.load_agent_marks().await {
                    warn!(error = %e, "cannot read the agents set aside by other servers");
                }
            }
            if tokio::time::Instant::now() >= next_reap {
                next_reap = tokio::time::Instant::now() + self.config.lease / 2;
                // Servers announce themselves every third of a lease: no
                // need to look more often than this.
                if let Err(e) = self.load_agents_elsewhere().await {
                    warn!(error = %e, "cannot read the agents other servers run");
                }
                if let Err(e) = self.reclaim_orphans().await {
                    warn!(error = %e, "cannot look for tasks of dead servers");
                }
                if let Err(e) = self.sweep_accepted_sandboxes().await {
                    warn!(error = %e, "cannot look for sandboxes of accepted tasks");
                }
            }
            if let Err(e) = self.promote_pending().await {
                warn!(error = %e, "cannot check pending tasks");
            }
            if let Err(e) = self.expire_blocked().await {
                warn!(error = %e, "cannot check blocked tasks");
            }
            if let Err(e) = self.start_runnable(&mut attempts, &attempts_token).await {
                warn!(error = %e, "cannot start queued tasks");
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = activity.wake.notified() => {}
                Some(_) = attempts.join_next() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
        info!(running = attempts.len(), mode = ?self.config.shutdown, "executor stopping");
        while attempts.join_next().await.is_some() {}
        leases_done.cancel();
        let _ = heartbeat.await;
        // Gone: the others no longer leave this server's agents' tasks to it.
        if let Err(e) = self
            .tasks
            .store()
            .announce_server(&self.config.server_id, None, now_millis())
            .await
        {
            warn!(error = %e, "cannot tell the other servers this one is leaving");
        }
    }
}
