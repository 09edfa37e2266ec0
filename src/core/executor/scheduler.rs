//! What to start, and on which agent: PENDING tasks promoted when their
//! dependencies complete (or failed with them), BLOCKED tasks expired, the
//! global and per-agent limits and set-aside agents, the candidates taken
//! in priority-then-age order, the claim (QUEUED → RUNNING by
//! compare-and-set, within the cluster-wide cap), and the choice of agent
//! for an `auto` task.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{AUTO_ORDER, Executor};
use crate::core::CoreError;
use crate::core::classify::{AgentState, Choice, classify};
use crate::core::model::{AgentChoice, AgentType, Task, TaskState, now_millis};
use crate::core::state;
use crate::store::{AgentSlot, TaskUpdate};

impl Executor {
    /// The agents this server can start now (their CLI or endpoint is there).
    pub(super) fn usable_agents(&self) -> Vec<AgentType> {
        AUTO_ORDER
            .into_iter()
            .filter(|a| {
                self.runners
                    .get(a)
                    .is_some_and(|r| r.unavailable().is_none())
            })
            .collect()
    }

    /// PENDING tasks whose dependencies completed become QUEUED; those with
    /// a dependency that failed or was cancelled fail with that reason.
    pub(super) async fn promote_pending(&self) -> Result<(), CoreError> {
        let store = self.tasks.store();
        for task in store.tasks_in_state(TaskState::Pending, 500).await? {
            let deps = store.get_tasks(&task.depends_on).await?;
            let failed = deps.iter().find(|d| d.state.is_failure());
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
    pub(super) async fn expire_blocked(&self) -> Result<(), CoreError> {
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

    pub(super) fn is_limited(&self, agent: AgentType) -> bool {
        self.tasks.activity().limited_until(agent).is_some()
    }

    pub(super) fn mark_limited(&self, agent: AgentType, for_how_long: Duration) {
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

    pub(super) fn has_room(&self, agent: AgentType) -> bool {
        self.tasks.activity().running_of(agent) < self.limit_of(agent)
    }

    /// The agents a task may run on now, in the order to try them (an
    /// `auto` task takes the next when a claim finds an agent's cluster-wide
    /// cap full): empty means wait (limits, or an agent this server lacks
    /// that another live server runs), Err is a reason the task can never
    /// run here nor on any other live server.
    pub(super) fn pick_agents(&self, task: &Task) -> Result<Vec<AgentType>, CannotRun> {
        if task.agent.agent_type == AgentType::Auto {
            let installed = self.usable_agents();
            if installed.is_empty() {
                if !self.elsewhere.lock().expect("elsewhere lock").is_empty() {
                    return Ok(Vec::new()); // another server runs it
                }
                return Err(CannotRun::NoAgent);
            }
            return Ok(installed
                .into_iter()
                .filter(|a| !self.is_limited(*a) && self.has_room(*a))
                .collect());
        }
        let agent = task.agent.agent_type;
        let missing = match self.runners.get(&agent) {
            None => Some(CannotRun::NoRunner(agent)),
            Some(runner) => runner.unavailable().map(CannotRun::Unavailable),
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

    /// Starts what can start now: passes over the queue until one starts
    /// nothing (each pass looks again at which agents have room, so a task
    /// of an agent with room starts at once whatever waits ahead of it).
    pub(super) async fn start_runnable(
        self: &Arc<Self>,
        attempts: &mut JoinSet<()>,
        token: &CancellationToken,
    ) -> Result<(), CoreError> {
        while self.start_some(attempts, token).await? > 0 {}
        Ok(())
    }

    /// One pass: the first runnable tasks (priority, then age) of the
    /// agents that can take work, each started or, if it can never run,
    /// failed. Returns how many tasks left the queue.
    async fn start_some(
        self: &Arc<Self>,
        attempts: &mut JoinSet<()>,
        token: &CancellationToken,
    ) -> Result<usize, CoreError> {
        let activity = self.tasks.activity();
        let free = self
            .config
            .max_concurrent
            .saturating_sub(activity.running_count());
        if free == 0 || self.shutdown.is_cancelled() {
            return Ok(0);
        }
        let agents = self.agents_taking_work().await?;
        let candidates = self
            .tasks
            .store()
            .runnable_tasks(
                now_millis(),
                (free * 4 + 16) as u64,
                &self.config.server_id,
                &agents,
            )
            .await?;
        let (mut started, mut failed) = (0, 0);
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
                Err(why) => {
                    let reason = why.to_string();
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
                        failed += 1;
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
        Ok(started + failed)
    }

    /// The agents whose queued tasks a pass looks at: those that can start
    /// one here now (available, not set aside, under their limit here and
    /// their cap over the cluster), those no live server runs (their tasks
    /// fail at once), and `auto` when one of the first kind exists (or no
    /// agent runs anywhere). Tasks of the others wait without taking room
    /// in the pass.
    async fn agents_taking_work(&self) -> Result<Vec<AgentType>, CoreError> {
        let full = self.full_in_cluster().await?;
        let usable = self.usable_agents();
        let mut agents: Vec<AgentType> = AUTO_ORDER
            .into_iter()
            .filter(|&agent| {
                if usable.contains(&agent) {
                    !self.is_limited(agent) && self.has_room(agent) && !full.contains(&agent)
                } else {
                    !self.runs_elsewhere(agent)
                }
            })
            .collect();
        let some_room = agents.iter().any(|a| usable.contains(a));
        let none_anywhere =
            usable.is_empty() && self.elsewhere.lock().expect("elsewhere lock").is_empty();
        if some_room || none_anywhere {
            agents.push(AgentType::Auto);
        }
        Ok(agents)
    }

    /// The agents whose cluster-wide cap is taken by attempts running on
    /// all servers (a claim of theirs would be refused).
    async fn full_in_cluster(&self) -> Result<Vec<AgentType>, CoreError> {
        if self.config.cluster_limits.is_empty() {
            return Ok(Vec::new());
        }
        let running = self.tasks.store().running_by_agent().await?;
        Ok(self
            .config
            .cluster_limits
            .iter()
            .filter(|(agent, limit)| {
                let now = running
                    .iter()
                    .find(|(a, _)| a == *agent)
                    .map_or(0, |(_, n)| *n);
                now >= **limit as u64
            })
            .map(|(agent, _)| *agent)
            .collect())
    }

    /// Claims a queued task (QUEUED to RUNNING, with this server's lease)
    /// for the first of `agents` whose cluster-wide cap has room.
    pub(super) async fn claim(
        &self,
        task: &Task,
        agents: &[AgentType],
    ) -> Result<Option<AgentType>, CoreError> {
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
    pub(super) async fn choose(
        &self,
        task: &Task,
        held: AgentType,
        token: &CancellationToken,
    ) -> Choice {
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
            by: AgentChoice::Rule,
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

    pub(super) fn limit_of(&self, agent: AgentType) -> usize {
        self.config
            .agent_limits
            .get(&agent)
            .copied()
            .unwrap_or(self.config.max_concurrent)
    }
}

/// Why a task can never run here nor on any other live server: the reason
/// it fails with.
#[derive(Debug, thiserror::Error)]
pub(super) enum CannotRun {
    #[error(
        "no agent is available on this server: install claude, codex or gemini, or configure a local model"
    )]
    NoAgent,
    /// This server has no runner for the agent.
    #[error("agent `{0}` is not available on this server")]
    NoRunner(AgentType),
    /// The runner's reason (its CLI is missing).
    #[error("{0}")]
    Unavailable(String),
}
