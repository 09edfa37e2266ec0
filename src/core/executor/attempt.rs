//! One attempt, from claim to record: the execution log (with the `auto`
//! choice), the sandbox, the prompt (`protocol::continuation`), the runner
//! under a timeout, the question taken out, the commit, the decision
//! (`decide`, whose set-aside and note are performed here), delivery of the
//! branch to the project (and the publish remote), the summary fallback,
//! and the final write of the execution and the task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::decide::{DecideContext, Decision, decide};
use super::protocol::{SYSTEM_PROMPT, take_question};
use super::{Executor, ProjectTarget};
use crate::core::CoreError;
use crate::core::logs::{LogKind, LogWriter};
use crate::core::model::{
    AgentType, Execution, ExecutionState, FileChange, StartFrom, Task, TaskState, now_millis,
};
use crate::core::runner::{RunOutcome, RunRequest};
use crate::core::state;
use crate::runners::extract_summary;
use crate::sandbox::{
    Base, Sandbox, SandboxConfig, SandboxError, default_branch, deliver, rebase_and_push,
};
use crate::store::{Lease, TaskUpdate};

/// How long an attempt's end waits for its log lines to reach the store
/// (only when logs are shared between servers).
const SHARE_FLUSH_LIMIT: Duration = Duration::from_secs(5);

impl Executor {
    pub(super) async fn run_attempt(
        self: Arc<Self>,
        task: Task,
        agent: AgentType,
        token: CancellationToken,
    ) {
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
                    log.note(text);
                }
                self.attempt(&task, &mut execution, &mut log, token).await
            }
            Err(e) => {
                self.record(&task, &mut execution, Err(NotStarted::Log(e)))
                    .await
            }
        };
        if let Err(e) = result {
            warn!(task_id = %task_id, error = %e, "cannot record the attempt");
        }
        self.tasks.activity().finish(task_id);
        self.tasks.activity().wake.notify_one();
    }

    /// A new sandbox made ready for the agent: the project's untracked
    /// files copied in, then its setup run, each said in the log.
    async fn ready_sandbox(
        &self,
        project: &super::ProjectTarget,
        sandbox: &crate::sandbox::Sandbox,
        log: &mut LogWriter,
        token: &CancellationToken,
    ) -> Result<(), NotStarted> {
        let copied = sandbox.copy_from(&project.path, &project.copy).await?;
        if !copied.is_empty() {
            let text = format!("copied from the project: {}", copied.join(", "));
            log.note(text);
        }
        match &project.setup {
            Some(setup) => {
                crate::runners::setup::run(setup, project.confinement, &sandbox.path, log, token)
                    .await
                    .map_err(NotStarted::Setup)
            }
            None => Ok(()),
        }
    }

    /// Where a new sandbox for `task` starts: its `base_ref`, else as its
    /// `start_from` says (its dependencies' work: those in its project).
    async fn base(&self, task: &Task) -> Result<Base, CoreError> {
        if !task.base_ref.is_empty() {
            return Ok(Base::Ref(task.base_ref.clone()));
        }
        Ok(match task.start_from {
            StartFrom::Head => Base::Head,
            StartFrom::WorkingTree => Base::WorkingTree,
            StartFrom::Dependencies if task.depends_on.is_empty() => Base::Head,
            StartFrom::Dependencies => {
                let deps = self.tasks.store().get_tasks(&task.depends_on).await?;
                let same_project: Vec<String> = task
                    .depends_on
                    .iter()
                    .filter(|id| {
                        deps.iter()
                            .any(|d| d.id == **id && d.project == task.project)
                    })
                    .map(|id| id.to_string())
                    .collect();
                if same_project.is_empty() {
                    Base::Head
                } else {
                    Base::Tasks(same_project)
                }
            }
        })
    }

    async fn attempt(
        &self,
        task: &Task,
        execution: &mut Execution,
        log: &mut LogWriter,
        token: CancellationToken,
    ) -> Result<(), CoreError> {
        let store = self.tasks.store();
        let previous = store.latest_execution(task.id).await?;
        // What earlier attempts left on the branch, to tell this one's apart.
        let earlier_commits = previous
            .as_ref()
            .map(|p| p.commits.clone())
            .unwrap_or_default();
        store.save_execution(execution.clone()).await?;

        let Some(project) = self.config.projects.get(&task.project) else {
            let why = NotStarted::NoProject(task.project.clone());
            log.note(why.to_string());
            return self.record(task, execution, Err(why)).await;
        };
        let base = self.base(task).await?;
        let sandbox = match Sandbox::prepare_from(
            &self.config.sandbox,
            &task.project,
            &project.path,
            &task.id.to_string(),
            &base,
        )
        .await
        {
            Ok(sandbox) => sandbox,
            Err(e) => {
                log.note(e.to_string());
                return self.record(task, execution, Err(e.into())).await;
            }
        };
        log.note(format!(
            "attempt {} on {} in {} (branch {})",
            execution.attempt,
            execution.agent,
            sandbox.path.display(),
            sandbox.branch
        ));
        if !sandbox.start.is_empty() {
            log.note(format!("the sandbox starts from {}", sandbox.start));
        }
        if sandbox.fresh
            && let Err(reason) = self.ready_sandbox(project, &sandbox, log, &token).await
        {
            return self.record(task, execution, Err(reason)).await;
        }

        let runner = self.runners[&execution.agent].clone();
        let (prompt, resume_session, prior_usage) =
            self.continuation(task, execution.agent, previous).await?;
        if let Some(session) = &resume_session {
            log.note(format!("resuming session {session}"));
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
            confinement: project.confinement,
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
                log.note(commit_note(
                    &execution.commits,
                    &earlier_commits,
                    execution,
                    &sandbox.branch,
                ));
            }
            Err(e) => log.note(format!("cannot commit the agent's changes: {e}")),
        }

        let context = DecideContext {
            agent: execution.agent,
            now: now_millis(),
            shutting_down: self.shutdown.is_cancelled(),
            timed_out: timed_out.load(Ordering::SeqCst),
            resumed,
            question,
            retry_base: self.config.retry_base,
            retry_max: self.config.retry_max,
            usage_limit_cooldown: self.config.usage_limit_cooldown,
        };
        let mut verdict = decide(&outcome, task, &context);
        if let Some((agent, for_how_long)) = verdict.set_aside {
            self.mark_limited(agent, for_how_long);
        }
        if let Some(text) = &verdict.note {
            log.note(text.clone());
        }
        if let Some(question) = &verdict.question {
            let payload = serde_json::to_value(question).unwrap_or_default();
            if let Err(e) = log.append(LogKind::Question, question.text.clone(), payload, "") {
                warn!(error = %e, "cannot write the execution log");
            }
        }
        // Work that may go on (requeued, blocked, in review) keeps its sandbox.
        let keeps_sandbox = verdict.task_state.keeps_sandbox();
        let mut succeeded = verdict.execution_state == ExecutionState::Succeeded;
        if succeeded && !execution.commits.is_empty() {
            // The work goes back to the project as branch claudomator/<task>,
            // and to the publish remote when the project has one.
            if let Err(e) = self.hand_over(&sandbox, project, log).await {
                log.note(e.to_string());
                succeeded = false;
                verdict = Decision::failed(format!("the agent finished, but {e}"));
            }
        }
        if !keeps_sandbox {
            match sandbox.finish(&self.config.sandbox, succeeded).await {
                Ok(true) => log.note(format!(
                    "kept the sandbox at {}",
                    sandbox_path(&self.config.sandbox, task)
                )),
                Ok(false) => {}
                Err(e) => log.note(format!("cannot clean up the sandbox: {e}")),
            }
        }
        log.note(
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
        let (text, summary) =
            match crate::core::summary::summarize(model.as_ref(), agent_text).await {
                Ok(summary) => ("the local model wrote the summary".to_string(), summary),
                Err(e) => {
                    warn!(error = %e, "no fallback summary");
                    (
                        format!("no summary: the local model could not write one ({e})"),
                        String::new(),
                    )
                }
            };
        log.note(text);
        summary
    }

    /// Delivers the sandbox branch into the project, then (if configured)
    /// rebases it onto the project's default branch and pushes it.
    async fn hand_over(
        &self,
        sandbox: &Sandbox,
        project: &ProjectTarget,
        log: &mut LogWriter,
    ) -> Result<(), HandOverError> {
        deliver(sandbox).await.map_err(HandOverError::Deliver)?;
        let Some(remote) = &project.publish_remote else {
            return Ok(());
        };
        let default = default_branch(&project.path)
            .await
            .map_err(HandOverError::DefaultBranch)?;
        rebase_and_push(sandbox, &self.config.sandbox, remote, &default)
            .await
            .map_err(|source| HandOverError::Publish {
                remote: remote.clone(),
                source,
            })?;
        let text = format!(
            "rebased {} onto {default} and pushed it to {remote}",
            sandbox.branch
        );
        log.note(text);
        Ok(())
    }

    /// Saves the finished execution, then moves the task (if it is still
    /// RUNNING: a cancel may have moved it already).
    async fn record(
        &self,
        task: &Task,
        execution: &mut Execution,
        result: Result<(RunOutcome, Decision), NotStarted>,
    ) -> Result<(), CoreError> {
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
                execution.cost_unknown = outcome.cost_unknown;
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
            Err(why) => Decision::failed(why.to_string()),
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
            // Requeued (a failed resume, a rate limit): the answer or
            // feedback this attempt carried goes with the next one, which
            // either resumes the session with it or starts afresh with it
            // after the instructions.
            if decision.task_state == TaskState::Queued && !task.pending_input.is_empty() {
                update.pending_input = Some(task.pending_input.clone());
            }
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

/// Why an attempt ended before its agent ran.
#[derive(Debug, thiserror::Error)]
enum NotStarted {
    #[error("cannot open the execution log: {0}")]
    Log(std::io::Error),
    /// The task's project (named) left the config.
    #[error("project `{0}` is no longer configured")]
    NoProject(String),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The project's setup failed (its reason says how).
    #[error("{0}")]
    Setup(String),
}

/// What the log says of the branch after an attempt: this attempt's own
/// commits, apart from those earlier attempts left; or that nothing changed.
fn commit_note(
    commits: &[String],
    earlier: &[String],
    execution: &Execution,
    branch: &str,
) -> String {
    let new: Vec<&str> = commits
        .iter()
        .filter(|c| !earlier.contains(c))
        .map(String::as_str)
        .collect();
    match (new.is_empty(), commits.is_empty()) {
        (true, true) => "the agent changed nothing: no file differs from the base commit".into(),
        (true, false) => format!(
            "this attempt changed nothing; {branch} keeps the earlier attempts' {} commit(s)",
            commits.len()
        ),
        (false, _) => format!(
            "committed on {branch}: {} ({} file(s) changed since the base commit)",
            new.join(", "),
            execution.changed_files.len()
        ),
    }
}

/// Why finished work did not reach the project (or its publish remote);
/// reads after "the agent finished, but".
#[derive(Debug, thiserror::Error)]
enum HandOverError {
    #[error("its branch could not be delivered to the project: {0}")]
    Deliver(SandboxError),
    #[error("the project's default branch is unknown: {0}")]
    DefaultBranch(SandboxError),
    #[error("publishing to {remote} failed: {source}")]
    Publish {
        remote: String,
        source: SandboxError,
    },
}

fn sandbox_path(config: &SandboxConfig, task: &Task) -> String {
    config.root.join(task.id.to_string()).display().to_string()
}
