//! A task's work as a reviewer sees it: the diff of its branch in the
//! project against the commit it started from (`sandbox::branch_diff`),
//! found from the task's project and its first commit. Read-only.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::error::{CoreError, CoreResult};
use super::tasks::TaskService;
use crate::sandbox::{BranchDiff, SandboxError, branch_diff};

/// Executions read to find a task's first commit, at most.
const EXECUTIONS_READ: u64 = 1000;

#[derive(Clone)]
pub struct Reviews {
    tasks: TaskService,
    /// Project name to its repository.
    projects: Arc<HashMap<String, PathBuf>>,
}

impl Reviews {
    pub fn new(tasks: TaskService, projects: HashMap<String, PathBuf>) -> Self {
        Reviews {
            tasks,
            projects: Arc::new(projects),
        }
    }

    /// The diff of task `task_id`'s branch, `context_lines` around each
    /// change (0: git's default, 3).
    pub async fn diff(&self, task_id: &str, context_lines: u32) -> CoreResult<BranchDiff> {
        let id = super::tasks::parse_id("task_id", task_id)?;
        let task = self
            .tasks
            .store()
            .get_task(id)
            .await?
            .ok_or_else(|| CoreError::not_found("task", id))?;
        let Some(project) = self.projects.get(&task.project) else {
            return Err(CoreError::FailedPrecondition(format!(
                "task {} is in project `{}`, which this server has no [[projects]] entry for",
                task.id, task.project
            )));
        };
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
        branch_diff(project, &task.id.to_string(), first.as_deref(), context)
            .await
            .map_err(|e| match e {
                SandboxError::GitUnavailable { .. } | SandboxError::Io { .. } => {
                    CoreError::Internal(e.to_string())
                }
                _ => CoreError::FailedPrecondition(e.to_string()),
            })
    }
}
