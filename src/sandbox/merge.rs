//! A task's work taken into the project: its branch merged (or rebased and
//! fast-forwarded) into a branch of the project. The work is done in a
//! temporary worktree beside the sandboxes, so the project's checkout is
//! only ever fast-forwarded, and only when it is that branch and clean; a
//! conflict changes nothing.

use std::path::Path;

use tracing::warn;

use super::error::SandboxError;
use super::git::{self, git};
use super::prepare::{branch_tip, name_files, uncommitted};
use super::{BRANCH_PREFIX, SandboxConfig, check_task_id, default_branch, remove_dir_if_exists};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeMode {
    /// `git merge` (a fast-forward when the branch is ahead of the target).
    Merge,
    /// The task's commits rebased onto the target, which is fast-forwarded
    /// to them; the task branch moves too.
    Rebase,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    /// The project branch that took the work.
    pub into: String,
    /// Its tip before and after.
    pub old_commit: String,
    pub new_commit: String,
    /// Whether the project's checkout was on it (and was fast-forwarded).
    pub checked_out: bool,
}

/// Takes task `task_id`'s branch into `into` (empty: the project's default
/// branch) of `project`, as `mode` says, with `message` for a merge commit.
pub async fn merge_task(
    cfg: &SandboxConfig,
    project: &Path,
    task_id: &str,
    into: &str,
    mode: MergeMode,
    message: &str,
) -> Result<Merged, SandboxError> {
    check_task_id(task_id)?;
    let branch = format!("{BRANCH_PREFIX}{task_id}");
    let tip = branch_tip(project, &branch)
        .await?
        .ok_or_else(|| SandboxError::NoBranch {
            project: project.to_path_buf(),
            branch: branch.clone(),
        })?;
    let into = if into.is_empty() {
        default_branch(project).await?
    } else {
        into.to_string()
    };
    let Some(old_commit) = branch_tip(project, &into).await? else {
        return Err(SandboxError::UnknownRef {
            project: project.display().to_string(),
            path: project.to_path_buf(),
            reference: into,
        });
    };
    let checked_out = git(project, ["symbolic-ref", "--quiet", "HEAD"])
        .user_config()
        .output()
        .await?
        .stdout
        .trim_ascii()
        == format!("refs/heads/{into}").as_bytes();
    if checked_out {
        let dirty = uncommitted(project).await?;
        if !dirty.is_empty() {
            return Err(SandboxError::DirtyTarget {
                path: project.to_path_buf(),
                branch: into,
                files: name_files(&dirty),
            });
        }
    }

    let scratch = cfg.root.join(format!(".merge-{task_id}"));
    remove_dir_if_exists(&scratch).await?;
    tokio::fs::create_dir_all(&cfg.root)
        .await
        .map_err(|e| SandboxError::io("create the sandbox root", &cfg.root, e))?;
    let start = match mode {
        MergeMode::Merge => old_commit.as_str(),
        MergeMode::Rebase => tip.as_str(),
    };
    let scratch_arg = scratch.to_string_lossy().into_owned();
    git(
        project,
        [
            "worktree",
            "add",
            "--quiet",
            "--detach",
            &scratch_arg,
            start,
        ],
    )
    .user_config()
    .run()
    .await?;
    // What the scratch worktree takes in: the task's work to merge, or
    // the target to rebase it onto.
    let other = match mode {
        MergeMode::Merge => tip.as_str(),
        MergeMode::Rebase => old_commit.as_str(),
    };
    let combined = combine(cfg, &scratch, mode, other, &branch, &into, message).await;
    let removed = git(project, ["worktree", "remove", "--force", &scratch_arg])
        .user_config()
        .run()
        .await;
    if let Err(error) = removed {
        warn!(%error, "cannot remove the merge worktree");
        let _ = remove_dir_if_exists(&scratch).await;
        let _ = git(project, ["worktree", "prune"])
            .user_config()
            .run()
            .await;
    }
    let new_commit = combined?;

    if mode == MergeMode::Rebase && new_commit != tip {
        let reference = format!("refs/heads/{branch}");
        git(project, ["update-ref", &reference, &new_commit, &tip])
            .user_config()
            .run()
            .await?;
    }
    if checked_out {
        git(project, ["merge", "--quiet", "--ff-only", &new_commit])
            .user_config()
            .run()
            .await?;
    } else {
        let reference = format!("refs/heads/{into}");
        git(
            project,
            ["update-ref", &reference, &new_commit, &old_commit],
        )
        .user_config()
        .run()
        .await?;
    }
    Ok(Merged {
        into,
        old_commit,
        new_commit,
        checked_out,
    })
}

/// The merge or rebase in the scratch worktree; returns its HEAD. A
/// conflict is undone and named.
async fn combine(
    cfg: &SandboxConfig,
    scratch: &Path,
    mode: MergeMode,
    other: &str,
    branch: &str,
    into: &str,
    message: &str,
) -> Result<String, SandboxError> {
    let (verb, run) = match mode {
        MergeMode::Merge => (
            "merge",
            git(
                scratch,
                ["merge", "--quiet", "--no-edit", "-m", message, other],
            ),
        ),
        MergeMode::Rebase => ("rebase", git(scratch, ["rebase", "--quiet", other])),
    };
    let out = run
        .user_config()
        .identity(
            &cfg.author_name,
            &cfg.author_email,
            mode == MergeMode::Merge,
        )
        .output()
        .await?;
    if !out.status.success() {
        let files = git::conflicted(scratch).await.unwrap_or_default();
        let _ = git(scratch, [verb, "--abort"]).output().await;
        if files.is_empty() {
            return Err(git::failed(verb, scratch, &out));
        }
        return Err(SandboxError::MergeConflict {
            branch: branch.to_string(),
            into: into.to_string(),
            files: name_files(&files),
        });
    }
    git(scratch, ["rev-parse", "HEAD"]).run().await
}
