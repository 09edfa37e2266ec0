//! The executor: picks runnable tasks in priority order within the global
//! and per-agent limits, runs each attempt in a git sandbox through its
//! runner, and records the outcome. Cancel, timeout and shutdown all go
//! through one cancel token per attempt, which ends the agent's whole
//! process group.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::classify::{AgentState, Choice, classify};
use super::llm::ChatModel;
use super::logs::{LogKind, LogWriter};
use super::model::{
    AgentType, Execution, ExecutionState, FileChange, Id, Question, Task, TaskState, now_millis,
};
use super::state;
use super::tasks::TaskService;
use crate::runners::{RunOutcome, RunRequest, Runner, Verdict, extract_summary};
use crate::sandbox::{Sandbox, SandboxConfig, default_branch, deliver, rebase_and_push};
use crate::store::{AgentSlot, Lease, TaskUpdate};

/// What the agent is told on top of its own system prompt.
pub const SYSTEM_PROMPT: &str = "You are running unattended under claudomator, in a git \
sandbox of the project (your working directory), on a branch of your own. Work only inside \
that directory. Your changes are committed for you when you finish. End your final message \
with a `## Summary` section saying what you changed and how you checked it. If you cannot go \
on without a decision from a person, write the file `.claudomator/question.json` in your \
working directory as {\"question\": \"...\", \"choices\": [\"...\"], \"context\": \"...\"} \
(choices and context optional) and end your turn: the answer will come as the next message \
of this session.";

/// What to do with running agents when the server stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// How long an attempt's end waits for its log lines to reach the store
/// (only when logs are shared between servers).
const SHARE_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// Preference order for `auto` until a classifier picks.
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

    /// What the other servers that announced themselves within a lease can
    /// run.
    async fn load_agents_elsewhere(&self) -> Result<(), super::CoreError> {
        let since = now_millis() - self.config.lease.as_millis() as i64;
        let mut agents: Vec<AgentType> = self
            .tasks
            .store()
            .servers_seen_since(since)
            .await?
            .into_iter()
            .filter(|(id, _)| *id != self.config.server_id)
            .flat_map(|(_, agents)| agents)
            .collect();
        agents.sort_by_key(|a| a.as_str());
        agents.dedup();
        *self.elsewhere.lock().expect("elsewhere lock") = agents;
        Ok(())
    }

    fn runs_elsewhere(&self, agent: AgentType) -> bool {
        self.elsewhere
            .lock()
            .expect("elsewhere lock")
            .contains(&agent)
    }

    /// The agents this server can start now (their CLI or endpoint is there).
    fn usable_agents(&self) -> Vec<AgentType> {
        AUTO_ORDER
            .into_iter()
            .filter(|a| {
                self.runners
                    .get(a)
                    .is_some_and(|r| r.unavailable().is_none())
            })
            .collect()
    }

    /// Agents other servers set aside (rate limit, spent quota) are set
    /// aside here too.
    async fn load_agent_marks(&self) -> Result<(), super::CoreError> {
        for (agent, until) in self.tasks.store().agent_marks(now_millis()).await? {
            self.tasks.activity().mark_limited(agent, until);
        }
        Ok(())
    }

    /// A claim by this server, from now.
    fn lease(&self) -> Lease {
        Lease {
            owner: self.config.server_id.clone(),
            until: now_millis() + self.config.lease.as_millis() as i64,
        }
    }

    /// Every third of the lease, extends this server's claims on the tasks
    /// it runs. A task it no longer holds (cancelled through another
    /// server, or taken over after this one was cut off for longer than a
    /// lease) has its agent stopped here.
    async fn renew_leases(self: Arc<Self>, done: CancellationToken) {
        let activity = self.tasks.activity().clone();
        loop {
            // Which agents this server runs, for the others (see
            // `pick_agents`); its being seen is its being alive.
            let usable = self.usable_agents();
            if let Err(e) = self
                .tasks
                .store()
                .announce_server(&self.config.server_id, Some(&usable), now_millis())
                .await
            {
                warn!(error = %e, "cannot tell the other servers which agents run here");
            }
            tokio::select! {
                _ = done.cancelled() => return,
                _ = tokio::time::sleep(self.config.lease / 3) => {}
            }
            let running = activity.running_ids();
            let lease = self.lease();
            match self
                .tasks
                .store()
                .renew_leases(&lease.owner, lease.until, &running)
                .await
            {
                Ok(held) => {
                    for id in running.iter().filter(|id| !held.contains(id)) {
                        // An attempt that just recorded its end is missing
                        // too; stopping it then changes nothing.
                        if activity.stop(*id) {
                            info!(task_id = %id, "task no longer held by this server; stopping its agent");
                        }
                    }
                }
                Err(e) => warn!(error = %e, "cannot renew task leases"),
            }
        }
    }

    /// Tasks left RUNNING by a server whose lease ran out (it died or was
    /// cut off) are recovered here with the same rules as after a restart.
    async fn reclaim_orphans(&self) -> Result<(), super::CoreError> {
        let report = super::recovery::reclaim(
            &self.tasks,
            &self.runners,
            &self.config.server_id,
            self.config.requeue_on_restart,
            false,
        )
        .await?;
        if report.requeued_tasks + report.failed_tasks > 0 {
            info!(
                ?report,
                "recovered the tasks of a server that stopped renewing its leases"
            );
            self.tasks.activity().wake.notify_one();
        }
        Ok(())
    }

    /// Removes the kept sandboxes of tasks accepted through another server
    /// (accepting removes the sandbox only on the server that took the
    /// request; a sandbox lives on the server that ran the task).
    async fn sweep_accepted_sandboxes(&self) -> Result<(), super::CoreError> {
        let mut ids = Vec::new();
        if let Ok(mut dir) = tokio::fs::read_dir(&self.config.sandbox.root).await {
            while let Ok(Some(entry)) = dir.next_entry().await {
                if let Some(id) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<Id>().ok())
                {
                    ids.push(id);
                }
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        for task in self.tasks.store().get_tasks(&ids).await? {
            if task.state != TaskState::Completed {
                continue;
            }
            match crate::sandbox::remove(&self.config.sandbox, &task.id.to_string()).await {
                Ok(()) => info!(task_id = %task.id, "removed the sandbox of an accepted task"),
                Err(e) => {
                    warn!(task_id = %task.id, error = %e, "cannot remove the sandbox of an accepted task")
                }
            }
        }
        Ok(())
    }

    /// PENDING tasks whose dependencies completed become QUEUED; those with
    /// a dependency that failed or was cancelled fail with that reason.
    async fn promote_pending(&self) -> Result<(), super::CoreError> {
        let store = self.tasks.store();
        for task in store.tasks_in_state(TaskState::Pending, 500).await? {
            let deps = store.get_tasks(&task.depends_on).await?;
            let failed = deps.iter().find(|d| {
                matches!(
                    d.state,
                    TaskState::Failed
                        | TaskState::TimedOut
                        | TaskState::Cancelled
                        | TaskState::BudgetExceeded
                )
            });
            let (to, reason) = if let Some(dep) = failed {
                (
                    TaskState::Failed,
                    format!("dependency {} ended {}", dep.id, dep.state),
                )
            } else if deps.len() == task.depends_on.len()
                && deps.iter().all(|d| d.state == TaskState::Completed)
            {
                (TaskState::Queued, String::new())
            } else {
                continue;
            };
            state::check(task.state, to)?;
            self.tasks
                .apply(TaskUpdate::new(task.id, TaskState::Pending, to, &reason))
                .await?;
        }
        Ok(())
    }

    /// BLOCKED tasks nobody answered within `blocked_timeout` time out.
    async fn expire_blocked(&self) -> Result<(), super::CoreError> {
        let Some(timeout) = self.config.blocked_timeout else {
            return Ok(());
        };
        let store = self.tasks.store();
        let cutoff = now_millis() - timeout.as_millis() as i64;
        for task in store.tasks_in_state(TaskState::Blocked, 500).await? {
            if task.updated_at > cutoff {
                continue;
            }
            state::check(TaskState::Blocked, TaskState::TimedOut)?;
            let reason = format!(
                "nobody answered the agent's question within {}",
                humantime::format_duration(timeout)
            );
            self.tasks
                .apply(TaskUpdate::new(
                    task.id,
                    TaskState::Blocked,
                    TaskState::TimedOut,
                    &reason,
                ))
                .await?;
            info!(task_id = %task.id, "blocked task timed out");
        }
        Ok(())
    }

    fn is_limited(&self, agent: AgentType) -> bool {
        self.tasks.activity().limited_until(agent).is_some()
    }

    fn mark_limited(&self, agent: AgentType, for_how_long: Duration) {
        let until = now_millis() + for_how_long.as_millis() as i64;
        self.tasks.activity().mark_limited(agent, until);
        // Other servers sharing the database set it aside too.
        let store = self.tasks.store().clone();
        tokio::spawn(async move {
            if let Err(e) = store.mark_agent(agent, until).await {
                warn!(agent = %agent, error = %e, "cannot share the agent's set-aside mark");
            }
        });
        info!(agent = %agent, seconds = for_how_long.as_secs(), "agent set aside");
    }

    fn has_room(&self, agent: AgentType) -> bool {
        self.tasks.activity().running_of(agent) < self.limit_of(agent)
    }

    /// The agents a task may run on now, in the order to try them (an
    /// `auto` task takes the next when a claim finds an agent's cluster-wide
    /// cap full): empty means wait (limits, or an agent this server lacks
    /// that another live server runs), Err is a reason the task can never
    /// run here nor on any other live server.
    fn pick_agents(&self, task: &Task) -> Result<Vec<AgentType>, String> {
        if task.agent.agent_type == AgentType::Auto {
            let installed = self.usable_agents();
            if installed.is_empty() {
                if !self.elsewhere.lock().expect("elsewhere lock").is_empty() {
                    return Ok(Vec::new()); // another server runs it
                }
                return Err("no agent is available on this server: install claude, codex or gemini, or configure a local model".into());
            }
            return Ok(installed
                .into_iter()
                .filter(|a| !self.is_limited(*a) && self.has_room(*a))
                .collect());
        }
        let agent = task.agent.agent_type;
        let missing = match self.runners.get(&agent) {
            None => Some(format!("agent `{agent}` is not available on this server")),
            Some(runner) => runner.unavailable(),
        };
        if let Some(why) = missing {
            // Another live server that has the agent takes the task.
            return if self.runs_elsewhere(agent) {
                Ok(Vec::new())
            } else {
                Err(why)
            };
        }
        if !self.is_limited(agent) && self.has_room(agent) {
            Ok(vec![agent])
        } else {
            Ok(Vec::new())
        }
    }

    async fn start_runnable(
        self: &Arc<Self>,
        attempts: &mut JoinSet<()>,
        token: &CancellationToken,
    ) -> Result<(), super::CoreError> {
        let activity = self.tasks.activity();
        let free = self
            .config
            .max_concurrent
            .saturating_sub(activity.running_count());
        if free == 0 || self.shutdown.is_cancelled() {
            return Ok(());
        }
        let store = self.tasks.store();
        let candidates = store
            .runnable_tasks(now_millis(), (free * 4 + 16) as u64, &self.config.server_id)
            .await?;
        let mut started = 0;
        for task in candidates {
            if started == free {
                break;
            }
            let mut picked = self.pick_agents(&task);
            if picked.is_err() {
                // Failing is for good: first look again at what the other
                // servers run (read every half lease otherwise).
                self.load_agents_elsewhere().await?;
                picked = self.pick_agents(&task);
            }
            let agents = match picked {
                Ok(agents) => agents,
                Err(reason) => {
                    let update =
                        TaskUpdate::new(task.id, TaskState::Queued, TaskState::Running, "");
                    // QUEUED -> FAILED goes through RUNNING, as for any attempt.
                    if self.tasks.apply(update).await? {
                        self.tasks
                            .apply(TaskUpdate::new(
                                task.id,
                                TaskState::Running,
                                TaskState::Failed,
                                &reason,
                            ))
                            .await?;
                        warn!(task_id = %task.id, reason, "task cannot run");
                    }
                    continue;
                }
            };
            state::check(task.state, TaskState::Running)?;
            let Some(agent) = self.claim(&task, &agents).await? else {
                continue; // no room in the cluster, or someone else moved it
            };
            let attempt_token = token.child_token();
            if !activity.start(task.id, agent, attempt_token.clone()) {
                continue;
            }
            started += 1;
            let mut task = task;
            task.attempts += 1;
            task.state = TaskState::Running;
            let executor = self.clone();
            attempts.spawn(async move {
                executor.run_attempt(task, agent, attempt_token).await;
            });
        }
        Ok(())
    }

    async fn run_attempt(self: Arc<Self>, task: Task, agent: AgentType, token: CancellationToken) {
        let task_id = task.id;
        let choice = match task.agent.agent_type {
            AgentType::Auto => Some(self.choose(&task, agent, &token).await),
            _ => None,
        };
        let agent = choice.as_ref().map_or(agent, |c| c.agent);
        let model = if task.agent.model.is_empty() {
            choice
                .as_ref()
                .map(|c| c.model.clone())
                .filter(|m| !m.is_empty())
                .or_else(|| self.config.agent_models.get(&agent).cloned())
                .unwrap_or_default()
        } else {
            task.agent.model.clone()
        };
        let mut execution = Execution::start(&task, task.attempts, agent, &model);
        execution.server_id = self.config.server_id.clone();
        if let Some(choice) = &choice {
            execution.agent_choice = choice.by;
            execution.agent_choice_reason = choice.reason.clone();
        }
        let result = match self.tasks.logs().writer(execution.id) {
            Ok(mut log) => {
                execution.log_path = log.path().display().to_string();
                if let Some(choice) = &choice {
                    let text = format!(
                        "agent {agent} chosen by the {}: {}",
                        choice.by, choice.reason
                    );
                    if let Err(e) = log.append(LogKind::System, text, serde_json::Value::Null, "") {
                        warn!(error = %e, "cannot write the execution log");
                    }
                }
                self.attempt(&task, &mut execution, &mut log, token).await
            }
            Err(e) => {
                let reason = format!("cannot open the execution log: {e}");
                self.record(&task, &mut execution, Err(reason)).await
            }
        };
        if let Err(e) = result {
            warn!(task_id = %task_id, error = %e, "cannot record the attempt");
        }
        self.tasks.activity().finish(task_id);
        self.tasks.activity().wake.notify_one();
    }

    /// Claims a queued task (QUEUED to RUNNING, with this server's lease)
    /// for the first of `agents` whose cluster-wide cap has room.
    async fn claim(
        &self,
        task: &Task,
        agents: &[AgentType],
    ) -> Result<Option<AgentType>, super::CoreError> {
        for &agent in agents {
            let mut claim = TaskUpdate::new(task.id, TaskState::Queued, TaskState::Running, "");
            claim.attempts = Some(task.attempts + 1);
            // The attempt takes the answer or feedback with it.
            claim.pending_input = Some(String::new());
            claim.lease = Some(self.lease());
            claim.if_free_for = Some(self.config.server_id.clone());
            let cluster_limit = self.config.cluster_limits.get(&agent).copied();
            claim.agent_slot = Some(AgentSlot {
                agent,
                cluster_limit,
            });
            if self.tasks.apply(claim).await? {
                return Ok(Some(agent));
            }
            if cluster_limit.is_none() {
                // Nothing but another server's claim (or a cancel) stops
                // a claim without a cap: the task is not queued any more.
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// The agent of an `auto` task. It is chosen inside the attempt, which
    /// already holds a slot of `held` (the rule's pick when it was claimed),
    /// so the scheduler never waits on the model. A choice that has no room
    /// left by then keeps `held`.
    async fn choose(&self, task: &Task, held: AgentType, token: &CancellationToken) -> Choice {
        let activity = self.tasks.activity();
        let states: Vec<AgentState> = AUTO_ORDER
            .iter()
            .map(|&agent| AgentState {
                agent,
                unavailable: match self.runners.get(&agent) {
                    Some(runner) => runner.unavailable(),
                    None => Some(format!("no `{agent}` runner on this server")),
                },
                running: activity
                    .running_of(agent)
                    .saturating_sub(usize::from(agent == held)),
                max_concurrent: self.limit_of(agent),
                limited_until: activity.limited_until(agent),
                models: self
                    .config
                    .auto_models
                    .get(&agent)
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect();
        let kept = |reason: String| Choice {
            agent: held,
            model: String::new(),
            by: super::model::AgentChoice::Rule,
            reason,
        };
        let chosen = tokio::select! {
            _ = token.cancelled() => return kept("stopped while choosing".into()),
            chosen = classify(
                self.local_model.as_deref(),
                task,
                &states,
                &AUTO_ORDER,
                self.config.classify_timeout,
            ) => chosen,
        };
        let choice = match chosen {
            None => {
                return kept("no agent had room when it was chosen; kept the one claimed".into());
            }
            Some(choice) if choice.agent == held => return choice,
            Some(choice) => choice,
        };
        if !activity.switch_agent(task.id, choice.agent, self.limit_of(choice.agent)) {
            return kept(format!(
                "the {} chose {} ({}), which had no room left; kept {held}",
                choice.by, choice.agent, choice.reason
            ));
        }
        // The slot the claim took in the store moves too, so cluster-wide
        // limits count the attempt under the agent that runs it.
        let slot = AgentSlot {
            agent: choice.agent,
            cluster_limit: self.config.cluster_limits.get(&choice.agent).copied(),
        };
        let moved = self
            .tasks
            .store()
            .move_agent_slot(task.id, &self.config.server_id, &slot)
            .await;
        if matches!(moved, Ok(true)) {
            return choice;
        }
        activity.switch_agent(task.id, held, usize::MAX);
        kept(match moved {
            Err(e) => format!(
                "the {} chose {} ({}), but the store did not take the move ({e}); kept {held}",
                choice.by, choice.agent, choice.reason
            ),
            _ => format!(
                "the {} chose {} ({}), which had no room left in the cluster; kept {held}",
                choice.by, choice.agent, choice.reason
            ),
        })
    }

    fn limit_of(&self, agent: AgentType) -> usize {
        self.config
            .agent_limits
            .get(&agent)
            .copied()
            .unwrap_or(self.config.max_concurrent)
    }

    async fn attempt(
        &self,
        task: &Task,
        execution: &mut Execution,
        log: &mut LogWriter,
        token: CancellationToken,
    ) -> Result<(), super::CoreError> {
        let store = self.tasks.store();
        let previous = store.latest_execution(task.id).await?;
        store.save_execution(execution.clone()).await?;
        let note = |log: &mut LogWriter, text: String| {
            if let Err(e) = log.append(LogKind::System, text, serde_json::Value::Null, "") {
                warn!(error = %e, "cannot write the execution log");
            }
        };

        let Some(project) = self.config.projects.get(&task.project) else {
            let reason = format!("project `{}` is no longer configured", task.project);
            note(log, reason.clone());
            return self.record(task, execution, Err(reason)).await;
        };
        let sandbox = match Sandbox::prepare_at(
            &self.config.sandbox,
            &task.project,
            &project.path,
            &task.id.to_string(),
            &task.base_ref,
        )
        .await
        {
            Ok(sandbox) => sandbox,
            Err(e) => {
                note(log, e.to_string());
                return self.record(task, execution, Err(e.to_string())).await;
            }
        };
        note(
            log,
            format!(
                "attempt {} on {} in {} (branch {})",
                execution.attempt,
                execution.agent,
                sandbox.path.display(),
                sandbox.branch
            ),
        );

        let runner = self.runners[&execution.agent].clone();
        let (prompt, resume_session, prior_usage) =
            self.continuation(task, execution.agent, previous).await?;
        if let Some(session) = &resume_session {
            note(log, format!("resuming session {session}"));
        }
        let resumed = resume_session.clone();
        let request = RunRequest {
            task_id: task.id,
            execution_id: execution.id,
            workdir: sandbox.path.clone(),
            prompt,
            system_prompt: SYSTEM_PROMPT.to_string(),
            model: execution.model.clone(),
            allowed_tools: task.agent.allowed_tools.clone(),
            max_budget_usd: task.agent.max_budget_usd,
            max_turns: task.agent.max_turns,
            resume_session,
            prior_usage,
        };
        let timed_out = Arc::new(AtomicBool::new(false));
        let timer = {
            let timed_out = timed_out.clone();
            let token = token.clone();
            let timeout = task.timeout;
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                timed_out.store(true, Ordering::SeqCst);
                token.cancel();
            })
        };
        let outcome = runner.run(request, log, token).await;
        timer.abort();
        // Taken out before the commit, so the question is not committed.
        let question = take_question(&sandbox.path).await;

        let message = format!(
            "{}\n\nclaudomator task {} (execution {}, attempt {})",
            task.name, task.id, execution.id, execution.attempt
        );
        match sandbox.commit_all(&self.config.sandbox, &message).await {
            Ok(changes) => {
                execution.commits = changes.commits;
                execution.changed_files = changes.files.iter().map(|f| f.path.clone()).collect();
                execution.file_changes = changes
                    .files
                    .into_iter()
                    .map(|f| FileChange {
                        path: f.path,
                        added: f.added,
                        removed: f.removed,
                    })
                    .collect();
                if !execution.commits.is_empty() {
                    note(
                        log,
                        format!(
                            "committed {} file(s) on {}: {}",
                            execution.changed_files.len(),
                            sandbox.branch,
                            execution.commits.join(", ")
                        ),
                    );
                }
            }
            Err(e) => note(log, format!("cannot commit the agent's changes: {e}")),
        }

        let mut verdict = self.verdict(
            task,
            execution.agent,
            &outcome,
            timed_out.load(Ordering::SeqCst),
        );
        // A session that cannot be resumed (its transcript cut short by a
        // crash, or gone) is not the task's failure: the next attempt,
        // seeing a failed run before it, starts afresh.
        if let (Some(session), Verdict::Failed(reason)) = (&resumed, &outcome.verdict)
            && task.attempts < task.max_attempts
        {
            verdict.task_state = TaskState::Queued;
            verdict.reason = format!(
                "resuming session {session} failed ({reason}); the next attempt starts afresh"
            );
            note(log, verdict.reason.clone());
        }
        if let Some(question) = question
            && verdict.execution_state == ExecutionState::Succeeded
        {
            let payload = serde_json::to_value(&question).unwrap_or_default();
            if let Err(e) = log.append(LogKind::Question, question.text.clone(), payload, "") {
                warn!(error = %e, "cannot write the execution log");
            }
            verdict = Decision {
                execution_state: ExecutionState::Blocked,
                task_state: TaskState::Blocked,
                reason: "waiting for an answer".into(),
                run_after: None,
                question: Some(question),
            };
        }
        // Work that may go on (requeued, blocked, in review) keeps its sandbox.
        let keeps_sandbox = matches!(
            verdict.task_state,
            TaskState::Queued | TaskState::Blocked | TaskState::Ready
        );
        let mut succeeded = verdict.execution_state == ExecutionState::Succeeded;
        if succeeded && !execution.commits.is_empty() {
            // The work goes back to the project as branch claudomator/<task>,
            // and to the publish remote when the project has one.
            if let Err(e) = self.hand_over(&sandbox, project, log).await {
                note(log, e.clone());
                succeeded = false;
                verdict = Decision {
                    execution_state: ExecutionState::Failed,
                    task_state: TaskState::Failed,
                    reason: format!("the agent finished, but {e}"),
                    run_after: None,
                    question: None,
                };
            }
        }
        if !keeps_sandbox {
            match sandbox.finish(&self.config.sandbox, succeeded).await {
                Ok(true) => note(
                    log,
                    format!(
                        "kept the sandbox at {}",
                        sandbox_path(&self.config.sandbox, task)
                    ),
                ),
                Ok(false) => {}
                Err(e) => note(log, format!("cannot clean up the sandbox: {e}")),
            }
        }
        note(
            log,
            format!("{}: {}", verdict.task_state, verdict.reason)
                .trim_end_matches(": ")
                .to_string(),
        );
        if verdict.execution_state == ExecutionState::Succeeded
            && extract_summary(&outcome.final_text).is_none()
        {
            execution.summary = self.fallback_summary(&outcome.final_text, log).await;
        }
        self.record(task, execution, Ok((outcome, verdict))).await
    }

    /// A summary by the local model for an agent that wrote none, or empty
    /// (logged) when there is no model or it fails: never fails the task.
    async fn fallback_summary(&self, agent_text: &str, log: &mut LogWriter) -> String {
        let Some(model) = &self.local_model else {
            return String::new();
        };
        let (text, summary) = match super::summary::summarize(model.as_ref(), agent_text).await {
            Ok(summary) => ("the local model wrote the summary".to_string(), summary),
            Err(e) => {
                warn!(error = %e, "no fallback summary");
                (
                    format!("no summary: the local model could not write one ({e})"),
                    String::new(),
                )
            }
        };
        if let Err(e) = log.append(LogKind::System, text, serde_json::Value::Null, "") {
            warn!(error = %e, "cannot write the execution log");
        }
        summary
    }

    /// What the next attempt says to the agent: the task's instructions in a
    /// new session; or, in the same session, a person's answer or review
    /// feedback, or a continuation after an interruption (with the tokens
    /// that session had used, for agents that count per session).
    async fn continuation(
        &self,
        task: &Task,
        agent: AgentType,
        previous: Option<Execution>,
    ) -> Result<(String, Option<String>, Option<(u64, u64)>), super::CoreError> {
        // A session lives in the sandbox and agent home of the server that
        // ran it: another server starts the task afresh.
        let resumable = |p: &Execution| {
            p.agent == agent
                && !p.session_id.is_empty()
                && (p.server_id.is_empty() || p.server_id == self.config.server_id)
        };
        let previous = previous.filter(resumable);
        let prompt = if !task.pending_input.is_empty() {
            // An answer or review feedback: the next message of the session.
            match &previous {
                Some(_) => task.pending_input.clone(),
                None => format!("{}\n\n{}", task.instructions, task.pending_input),
            }
        } else if previous
            .as_ref()
            .is_some_and(|p| p.state == ExecutionState::Interrupted)
        {
            format!(
                "The previous run of this task was interrupted when the server restarted. \
                 Continue where you left off. The task was:\n\n{}",
                task.instructions
            )
        } else {
            return Ok((task.instructions.clone(), None, None));
        };
        let Some(previous) = previous else {
            return Ok((prompt, None, None));
        };
        let session_runs = self
            .tasks
            .store()
            .executions_of_session(task.id, &previous.session_id)
            .await?;
        let used = session_runs.iter().fold((0, 0), |(i, o), e| {
            (i + e.input_tokens, o + e.output_tokens)
        });
        Ok((prompt, Some(previous.session_id), Some(used)))
    }

    /// Delivers the sandbox branch into the project, then (if configured)
    /// rebases it onto the project's default branch and pushes it.
    async fn hand_over(
        &self,
        sandbox: &Sandbox,
        project: &ProjectTarget,
        log: &mut LogWriter,
    ) -> Result<(), String> {
        deliver(sandbox)
            .await
            .map_err(|e| format!("its branch could not be delivered to the project: {e}"))?;
        let Some(remote) = &project.publish_remote else {
            return Ok(());
        };
        let default = default_branch(&project.path)
            .await
            .map_err(|e| format!("the project's default branch is unknown: {e}"))?;
        rebase_and_push(sandbox, &self.config.sandbox, remote, &default)
            .await
            .map_err(|e| format!("publishing to {remote} failed: {e}"))?;
        let text = format!(
            "rebased {} onto {default} and pushed it to {remote}",
            sandbox.branch
        );
        if let Err(e) = log.append(LogKind::System, text, serde_json::Value::Null, "") {
            warn!(error = %e, "cannot write the execution log");
        }
        Ok(())
    }

    /// Decides the execution's and the task's next states from an outcome.
    fn verdict(
        &self,
        task: &Task,
        agent: AgentType,
        outcome: &RunOutcome,
        timed_out: bool,
    ) -> Decision {
        let decide = |execution_state, task_state, reason: String| Decision {
            execution_state,
            task_state,
            reason,
            run_after: None,
            question: None,
        };
        match &outcome.verdict {
            Verdict::Stopped if self.shutdown.is_cancelled() => decide(
                ExecutionState::Interrupted,
                TaskState::Queued,
                "the server shut down mid-run; requeued".into(),
            ),
            Verdict::Stopped if timed_out => decide(
                ExecutionState::TimedOut,
                TaskState::TimedOut,
                format!(
                    "timed out after {}",
                    humantime::format_duration(task.timeout)
                ),
            ),
            Verdict::Stopped => decide(
                ExecutionState::Cancelled,
                TaskState::Cancelled,
                "cancelled".into(),
            ),
            Verdict::Succeeded if task.review_required => decide(
                ExecutionState::Succeeded,
                TaskState::Ready,
                "waiting for review".into(),
            ),
            Verdict::Succeeded => decide(
                ExecutionState::Succeeded,
                TaskState::Completed,
                String::new(),
            ),
            Verdict::Failed(reason) => {
                decide(ExecutionState::Failed, TaskState::Failed, reason.clone())
            }
            Verdict::BudgetExceeded(reason) => decide(
                ExecutionState::BudgetExceeded,
                TaskState::BudgetExceeded,
                reason.clone(),
            ),
            Verdict::UsageLimited { message, resets_at } => {
                let now = now_millis();
                let cooldown = resets_at
                    .filter(|at| *at > now)
                    .map(|at| Duration::from_millis((at - now) as u64))
                    .unwrap_or(self.config.usage_limit_cooldown);
                self.mark_limited(agent, cooldown);
                let until =
                    humantime::format_rfc3339_seconds(std::time::SystemTime::now() + cooldown);
                if task.attempts < task.max_attempts {
                    // An `auto` task may go to another agent at once; one
                    // that named this agent waits for it.
                    let run_after = (task.agent.agent_type != AgentType::Auto)
                        .then(|| now + cooldown.as_millis() as i64);
                    Decision {
                        execution_state: ExecutionState::RateLimited,
                        task_state: TaskState::Queued,
                        reason: format!(
                            "usage limit reached ({message}); {agent} set aside until {until}"
                        ),
                        run_after,
                        question: None,
                    }
                } else {
                    decide(
                        ExecutionState::RateLimited,
                        TaskState::Failed,
                        format!(
                            "usage limit reached ({message}); gave up after {} attempts",
                            task.attempts
                        ),
                    )
                }
            }
            Verdict::RateLimited {
                message,
                retry_after,
            } => {
                let backoff = self
                    .backoff(task.attempts)
                    .max(retry_after.unwrap_or_default());
                self.mark_limited(agent, backoff);
                if task.attempts < task.max_attempts {
                    Decision {
                        execution_state: ExecutionState::RateLimited,
                        task_state: TaskState::Queued,
                        reason: format!(
                            "rate limited ({message}); retrying in {}",
                            humantime::format_duration(Duration::from_millis(
                                backoff.as_millis() as u64
                            ))
                        ),
                        run_after: Some(now_millis() + backoff.as_millis() as i64),
                        question: None,
                    }
                } else {
                    decide(
                        ExecutionState::RateLimited,
                        TaskState::Failed,
                        format!(
                            "rate limited ({message}); gave up after {} attempts",
                            task.attempts
                        ),
                    )
                }
            }
        }
    }

    /// Exponential backoff: base × 2^(attempt-1), capped.
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        self.config
            .retry_base
            .saturating_mul(factor)
            .min(self.config.retry_max)
    }

    /// Saves the finished execution, then moves the task (if it is still
    /// RUNNING: a cancel may have moved it already).
    async fn record(
        &self,
        task: &Task,
        execution: &mut Execution,
        result: Result<(RunOutcome, Decision), String>,
    ) -> Result<(), super::CoreError> {
        let store = self.tasks.store();
        let decision = match result {
            Ok((outcome, decision)) => {
                execution.exit_code = outcome.exit_code;
                execution.session_id = outcome.session_id;
                if !outcome.model.is_empty() {
                    execution.model = outcome.model;
                }
                execution.cost_usd = outcome.cost_usd;
                execution.cost_estimated = outcome.cost_estimated;
                execution.input_tokens = outcome.input_tokens;
                execution.output_tokens = outcome.output_tokens;
                execution.turns = outcome.turns;
                execution.permission_denials = outcome.permission_denials;
                // A summary the agent wrote wins over the fallback's.
                if let Some(summary) = extract_summary(&outcome.final_text) {
                    execution.summary = summary;
                }
                decision
            }
            Err(reason) => Decision {
                execution_state: ExecutionState::Failed,
                task_state: TaskState::Failed,
                reason,
                run_after: None,
                question: None,
            },
        };
        execution.state = decision.execution_state;
        if decision.execution_state != ExecutionState::Succeeded {
            execution.error = decision.reason.clone();
        }
        execution.ended_at = Some(now_millis());
        // A server following this log through the store stops once it
        // sees the execution ended: every line must be in before that.
        if !self.tasks.logs().flush_shared(SHARE_FLUSH_LIMIT).await {
            warn!(execution_id = %execution.id, "the last log lines are not shared yet");
        }
        store.save_execution(execution.clone()).await?;

        if decision.task_state != TaskState::Cancelled {
            state::check(TaskState::Running, decision.task_state)?;
            let mut update = TaskUpdate::new(
                task.id,
                TaskState::Running,
                decision.task_state,
                &decision.reason,
            );
            update.run_after = decision.run_after;
            update.question = decision.question.map(Some);
            // Only while this server still holds the task, and let go of it.
            update.if_owner = Some(self.config.server_id.clone());
            update.lease = Some(Lease {
                owner: String::new(),
                until: 0,
            });
            if !execution.summary.is_empty() {
                update.summary = Some(execution.summary.clone());
            }
            self.tasks.apply(update).await?;
        }
        info!(
            task_id = %task.id,
            execution_id = %execution.id,
            state = %execution.state,
            cost_usd = execution.cost_usd,
            "attempt finished"
        );
        Ok(())
    }
}

fn sandbox_path(config: &SandboxConfig, task: &Task) -> String {
    config.root.join(task.id.to_string()).display().to_string()
}

struct Decision {
    execution_state: ExecutionState,
    task_state: TaskState,
    reason: String,
    run_after: Option<i64>,
    /// The agent's question, when the task blocks on one.
    question: Option<Question>,
}

/// Where an agent leaves a question for a person, relative to its sandbox.
pub const QUESTION_FILE: &str = ".claudomator/question.json";

/// Reads and removes the agent's question file, if it wrote one. A file
/// that does not parse still blocks the task, with its text as the question.
async fn take_question(sandbox: &Path) -> Option<Question> {
    let path = sandbox.join(QUESTION_FILE);
    let text = tokio::fs::read_to_string(&path).await.ok()?;
    let _ = tokio::fs::remove_file(&path).await;
    if let Some(dir) = path.parent() {
        let _ = tokio::fs::remove_dir(dir).await;
    }
    let mut question = serde_json::from_str::<Question>(&text).unwrap_or_else(|_| Question {
        text: text.trim().to_string(),
        ..Question::default()
    });
    question.asked_at = now_millis();
    (!question.text.trim().is_empty()).then_some(question)
}
