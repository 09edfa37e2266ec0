//! What tasks leave behind, listed and removed: the task branches in a
//! project (`claudomator/<task-id>`) and the sandboxes kept under the
//! root. Which of them may go is the caller's decision (`core::review`).

use std::path::Path;

use super::error::SandboxError;
use super::git::git;
use super::{BRANCH_PREFIX, SandboxConfig, check_task_id};

/// A task branch in a project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskBranch {
    pub task_id: String,
    pub commit: String,
    /// Its commit is in `into` already.
    pub merged: bool,
}

/// The task branches of `project`, each said merged or not into `into`.
pub async fn task_branches(project: &Path, into: &str) -> Result<Vec<TaskBranch>, SandboxError> {
    let prefix = format!("refs/heads/{BRANCH_PREFIX}");
    let listed = git(
        project,
        ["for-each-ref", "--format=%(refname) %(objectname)", &prefix],
    )
    .user_config()
    .run()
    .await?;
    let target = format!("refs/heads/{into}");
    let mut branches = Vec::new();
    for line in listed.lines() {
        let Some((reference, commit)) = line.split_once(' ') else {
            continue;
        };
        let task_id = reference.trim_start_matches(&prefix);
        if check_task_id(task_id).is_err() {
            continue;
        }
        let merged = git(
            project,
            ["merge-base", "--is-ancestor", commit, target.as_str()],
        )
        .user_config()
        .succeeds()
        .await?;
        branches.push(TaskBranch {
            task_id: task_id.to_string(),
            commit: commit.to_string(),
            merged,
        });
    }
    Ok(branches)
}

/// Deletes task `task_id`'s branch from `project`, if it still points
/// where it did when listed.
pub async fn delete_branch(
    project: &Path,
    task_id: &str,
    commit: &str,
) -> Result<(), SandboxError> {
    check_task_id(task_id)?;
    let reference = format!("refs/heads/{BRANCH_PREFIX}{task_id}");
    git(project, ["update-ref", "-d", &reference, commit])
        .user_config()
        .run()
        .await
        .map(|_| ())
}

/// The task ids of the sandboxes under the root (kept ones, or those of
/// tasks still going).
pub async fn sandboxes(cfg: &SandboxConfig) -> Result<Vec<String>, SandboxError> {
    let mut entries = match tokio::fs::read_dir(&cfg.root).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SandboxError::io("read", &cfg.root, e)),
    };
    let mut ids = Vec::new();
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|e| SandboxError::io("read", &cfg.root, e))?
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().await.is_ok_and(|t| t.is_dir());
        if is_dir && check_task_id(&name).is_ok() {
            ids.push(name);
        }
    }
    ids.sort();
    Ok(ids)
}
