//! Start-up reconciliation after a crash (SIGKILL, power loss): what a dead
//! server left running is made consistent before the executor starts.
//!
//! - Agent process groups the dead server recorded (`<data_dir>/running`,
//!   see `runners::process`) are killed, so no orphan outlives the server;
//!   a process that merely works in a sandbox (a person's shell) is not.
//! - Executions left RUNNING are marked INTERRUPTED; what the agent had
//!   reported (session, tokens, cost) is rebuilt from the execution log,
//!   which was written line by line before the crash.
//! - Tasks left RUNNING are requeued (the next attempt resumes the agent
//!   session, in the kept sandbox) within their attempt limit, or failed,
//!   per `[executor] on_restart`. QUEUED and BLOCKED tasks stay as they are.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use tracing::info;

use super::CoreResult;
use super::logs::LogKind;
use super::model::{AgentType, Execution, ExecutionState, TaskState, now_millis};
use super::runner::Runner;
use super::state;
use super::tasks::TaskService;
use crate::store::{Lease, TaskUpdate};

/// What a reconciliation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub killed_processes: usize,
    pub interrupted_executions: usize,
    pub requeued_tasks: usize,
    pub failed_tasks: usize,
}

pub const INTERRUPTED: &str = "interrupted: the server stopped during the run";

/// At start-up: kills the agents the previous run of this server recorded
/// in `data_dir`, then recovers the tasks it held (and any whose holder's
/// lease ran out).
pub async fn reconcile(
    tasks: &TaskService,
    runners: &HashMap<AgentType, Arc<dyn Runner>>,
    data_dir: &Path,
    requeue: bool,
    server_id: &str,
) -> CoreResult<RecoveryReport> {
    let killed = crate::runners::process::kill_recorded(
        &data_dir.join(crate::runners::process::RUNNING_DIR),
    ) + crate::runners::confine::pids::kill_left_over();
    let mut report = reclaim(tasks, runners, server_id, requeue, true).await?;
    report.killed_processes = killed;
    if report != RecoveryReport::default() {
        info!(?report, "recovered from an unclean stop");
    }
    Ok(report)
}

/// Recovers RUNNING tasks nobody holds: those whose lease ran out (their
/// server died or was cut off), and with `own`, those this server held
/// before a restart. Their RUNNING executions become INTERRUPTED (rebuilt
/// from the log where it is on this server); the tasks are requeued within
/// their attempt limit, or failed. Each task is taken back with a
/// compare-and-set on its state, holder and (for others' tasks) expired
/// lease, so of several servers recovering at once only one wins, and a
/// holder that renewed meanwhile keeps its task.
pub async fn reclaim(
    tasks: &TaskService,
    runners: &HashMap<AgentType, Arc<dyn Runner>>,
    server_id: &str,
    requeue: bool,
    own: bool,
) -> CoreResult<RecoveryReport> {
    let store = tasks.store();
    let now = now_millis();
    let mut report = RecoveryReport::default();
    for (task, owner) in store.orphaned_tasks(now, own.then_some(server_id)).await? {
        let ours = owner == server_id || owner.is_empty();
        for mut execution in store
            .task_executions_in_state(task.id, ExecutionState::Running)
            .await?
        {
            if ours {
                rebuild_from_log(tasks, runners, &mut execution).await;
            } else {
                // Its log is on the server that died: what it used is not
                // known here, which is not $0.
                execution.cost_unknown = true;
            }
            execution.state = ExecutionState::Interrupted;
            execution.error = if ours {
                INTERRUPTED.to_string()
            } else {
                format!("interrupted: server {owner} stopped renewing its lease")
            };
            execution.ended_at = Some(now_millis());
            store.save_execution(execution.clone()).await?;
            report.interrupted_executions += 1;
        }

        let (to, reason) = if requeue && task.attempts < task.max_attempts {
            let why = if ours {
                "the server restarted during the run".to_string()
            } else {
                format!("server {owner} stopped during the run")
            };
            (TaskState::Queued, format!("requeued: {why}"))
        } else {
            (
                TaskState::Failed,
                format!(
                    "interrupted by a server restart ({} of {} attempts used)",
                    task.attempts, task.max_attempts
                ),
            )
        };
        state::check(TaskState::Running, to)?;
        let mut update = TaskUpdate::new(task.id, TaskState::Running, to, &reason);
        update.if_owner = Some(owner.clone());
        if !ours {
            update.if_lease_before = Some(now);
        }
        update.lease = Some(Lease {
            owner: String::new(),
            until: 0,
        });
        if ours && to == TaskState::Queued {
            // It resumes its session here: other servers leave it to us.
            tasks.hold_for(&mut update, server_id);
        }
        if tasks.apply(update).await? {
            match to {
                TaskState::Queued => report.requeued_tasks += 1,
                _ => report.failed_tasks += 1,
            }
        }
    }
    Ok(report)
}

/// What the agent had reported (session, tokens, cost), from the execution
/// log this server wrote line by line before it died.
async fn rebuild_from_log(
    tasks: &TaskService,
    runners: &HashMap<AgentType, Arc<dyn Runner>>,
    execution: &mut Execution,
) {
    let events = tasks
        .logs()
        .read_all(execution.id)
        .await
        .unwrap_or_default();
    let agent_lines: Vec<String> = events
        .iter()
        .filter(|e| !matches!(e.kind, LogKind::Stderr | LogKind::Debug) && !e.raw.is_empty())
        .map(|e| e.raw.clone())
        .collect();
    if let Some(runner) = runners.get(&execution.agent) {
        let seen = runner.recover(&execution.model, &agent_lines);
        if !seen.session_id.is_empty() {
            execution.session_id = seen.session_id;
        }
        execution.input_tokens = seen.input_tokens;
        execution.output_tokens = seen.output_tokens;
        execution.cost_usd = seen.cost_usd;
        execution.cost_estimated = seen.cost_estimated;
        execution.cost_unknown = seen.cost_unknown;
        execution.turns = seen.turns;
    }
    if let Ok(mut log) = tasks.logs().writer(execution.id) {
        let _ = log.append(
            LogKind::System,
            "interrupted: the server restarted",
            serde_json::Value::Null,
            "",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Activity;
    use crate::core::logs::LogHub;
    use crate::core::model::{AgentSpec, SubmitRequest, TaskSpec};
    use crate::core::validate::TaskRules;
    use crate::store::Store;

    /// A task left RUNNING by a server whose lease ran out: its execution
    /// is interrupted, and since its log is on that server, its cost is
    /// unknown here, not $0.
    #[tokio::test]
    async fn another_servers_interrupted_attempt_has_an_unknown_cost() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("db")).await.unwrap();
        let logs = LogHub::new(dir.path().join("logs")).unwrap();
        let rules = TaskRules {
            projects: vec!["p".into()],
            ..TaskRules::default()
        };
        let tasks = TaskService::new(store, rules, logs, Arc::new(Activity::default()));
        let request = SubmitRequest {
            spec: TaskSpec {
                instructions: "work".into(),
                project: "p".into(),
                agent: AgentSpec {
                    agent_type: "claude".into(),
                    ..AgentSpec::default()
                },
                ..TaskSpec::default()
            },
            ..SubmitRequest::default()
        };
        let (task, _) = tasks.submit(request).await.unwrap();
        let mut claim = TaskUpdate::new(task.id, TaskState::Queued, TaskState::Running, "");
        claim.attempts = Some(1);
        claim.lease = Some(Lease {
            owner: "gone".into(),
            until: 1,
        });
        assert!(tasks.apply(claim).await.unwrap());
        let execution = Execution::start(&task, 1, AgentType::Claude, "claude-sonnet-4-5");
        tasks
            .store()
            .save_execution(execution.clone())
            .await
            .unwrap();

        let report = reclaim(&tasks, &HashMap::new(), "here", true, false)
            .await
            .unwrap();
        assert_eq!(report.interrupted_executions, 1);
        let after = tasks
            .store()
            .latest_execution(task.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(after.state, ExecutionState::Interrupted);
        assert!(after.cost_unknown, "{after:?}");
    }
}
