//! A task's work as a reviewer handles it: the diff of its branch in the
//! project against the commit it started from, the branch merged into the
//! project, and what ended tasks left pruned. The git side is
//! `crate::sandbox` (`diff.rs`, `merge.rs`, `prune.rs`); this decides which
//! task, which project and what may go.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::error::{CoreError, CoreResult, WrongState};
use super::model::{Task, TaskState};
use super::tasks::{TaskService, parse_id};
use crate::sandbox::{
    BRANCH_PREFIX, BranchDiff, MergeMode, Merged, SandboxConfig, SandboxError, branch_diff,
    default_branch, delete_branch, merge_task, sandboxes, task_branches,
};

/// Executions read to find a task's first commit, at most.
const EXECUTIONS_READ: u64 = 1000;

#[derive(Clone)]
pub struct Reviews {
    tasks: TaskService,
    /// Project name to its repository.
    projects: Arc<HashMap<String, PathBuf>>,
    /// Where sandboxes live (pruned ones, merge worktrees).
    sandbox: SandboxConfig,
}

impl Reviews {
    pub fn new(
        tasks: TaskService,
        projects: HashMap<String, PathBuf>,
        sandbox: SandboxConfig,
    ) -> Self {
        Reviews {
            tasks,
            projects: Arc::new(projects),
            sandbox,
        }
    }

    /// The diff of task `task_id`'s branch, `context_lines` around each
    /// change (0: git's default, 3).
    pub async fn diff(&self, task_id: &str, context_lines: u32) -> CoreResult<BranchDiff> {
        let (task, project) = self.task_and_project(task_id).await?;
        let runs = self
            .tasks
            .store()
            .list_executions(task.id, None, EXECUTIONS_READ)
            .await?;
        let first = runs
            .items
            .iter()
            .find_map(|run| run.commits.first().cloned());
        let context = if context_lines == 0 { 3 } else { context_lines };
        branch_diff(&project, &task.id.to_string(), first.as_deref(), context)
            .await
            .map_err(sandbox_error)
    }

    /// The task named `task_id` (a `task_id` field) and its project's
    /// repository on this server.
    async fn task_and_project(&self, task_id: &str) -> CoreResult<(Task, PathBuf)> {
        let id = parse_id("task_id", task_id)?;
        let task = self
            .tasks
            .store()
            .get_task(id)
            .await?
            .ok_or_else(|| CoreError::not_found("task", id))?;
        let Some(project) = self.projects.get(&task.project).cloned() else {
            return Err(CoreError::FailedPrecondition(format!(
                "task {} is in project `{}`, which this server has no [[projects]] entry for",
                task.id, task.project
            )));
        };
        Ok((task, project))
    }
}

/// One thing [`Reviews::prune`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pruned {
    pub task_id: String,
    /// The project of a branch; empty for a sandbox.
    pub project: String,
    pub kind: PrunedKind,
    /// The branch, or the sandbox's path.
    pub name: String,
    pub removed: bool,
    /// Why it stays; empty when it goes.
    pub kept_because: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrunedKind {
    Branch,
    Sandbox,
}

impl Reviews {
    /// Takes a READY or COMPLETED task's work into `into` of its project
    /// (see `sandbox::merge_task`).
    pub async fn merge(&self, task_id: &str, into: &str, rebase: bool) -> CoreResult<Merged> {
        let (task, project) = self.task_and_project(task_id).await?;
        if !matches!(task.state, TaskState::Ready | TaskState::Completed) {
            return Err(CoreError::WrongState(WrongState {
                task_id: task.id.to_string(),
                current: task.state,
                wanted: vec![TaskState::Ready, TaskState::Completed],
                message: format!(
                    "task {} is {}: only work that is done (ready or completed) is merged",
                    task.id, task.state
                ),
            }));
        }
        let mode = if rebase {
            MergeMode::Rebase
        } else {
            MergeMode::Merge
        };
        let message = format!("Merge claudomator task {}: {}", task.id, task.name);
        merge_task(
            &self.sandbox,
            &project,
            &task.id.to_string(),
            into,
            mode,
            &message,
        )
        .await
        .map_err(sandbox_error)
    }

    /// Removes what ended tasks left (see the `PruneTasks` RPC).
    pub async fn prune(&self, dry_run: bool, force: bool) -> CoreResult<Vec<Pruned>> {
        let mut found = Vec::new();
        let mut projects: Vec<(&String, &PathBuf)> = self.projects.iter().collect();
        projects.sort();
        for (name, path) in projects {
            let into = default_branch(path).await.map_err(sandbox_error)?;
            for branch in task_branches(path, &into).await.map_err(sandbox_error)? {
                let state = self.state_of(&branch.task_id).await?;
                let kept_because = match state {
                    None => "no such task in the database".to_string(),
                    Some(state) if !state.is_final() => format!("the task is {state}"),
                    Some(TaskState::Completed) if !branch.merged && !force => {
                        format!("not merged into {into} (--force removes it)")
                    }
                    Some(_) => String::new(),
                };
                let removed = kept_because.is_empty() && !dry_run;
                if removed {
                    delete_branch(path, &branch.task_id, &branch.commit)
                        .await
                        .map_err(sandbox_error)?;
                }
                found.push(Pruned {
                    name: format!("{BRANCH_PREFIX}{}", branch.task_id),
                    task_id: branch.task_id,
                    project: name.clone(),
                    kind: PrunedKind::Branch,
                    removed,
                    kept_because,
                });
            }
        }
        for task_id in sandboxes(&self.sandbox).await.map_err(sandbox_error)? {
            let kept_because = match self.state_of(&task_id).await? {
                Some(state) if !state.is_final() => format!("the task is {state}"),
                _ => String::new(),
            };
            let removed = kept_because.is_empty() && !dry_run;
            if removed {
                crate::sandbox::remove(&self.sandbox, &task_id)
                    .await
                    .map_err(sandbox_error)?;
            }
            found.push(Pruned {
                name: self.sandbox.root.join(&task_id).display().to_string(),
                task_id,
                project: String::new(),
                kind: PrunedKind::Sandbox,
                removed,
                kept_because,
            });
        }
        Ok(found)
    }

    /// The state of the task named `task_id`, if it exists.
    async fn state_of(&self, task_id: &str) -> CoreResult<Option<TaskState>> {
        let Ok(id) = task_id.parse() else {
            return Ok(None);
        };
        Ok(self.tasks.store().get_task(id).await?.map(|t| t.state))
    }
}

fn sandbox_error(e: SandboxError) -> CoreError {
    match e {
        SandboxError::GitUnavailable { .. } | SandboxError::Io { .. } => {
            CoreError::Internal(e.to_string())
        }
        _ => CoreError::FailedPrecondition(e.to_string()),
    }
}
