//! The git sandbox an agent runs in: a private clone of the project
//! repository on its own branch, `claudomator/<task-id>`, under the sandbox
//! root. The agent edits (and may commit in) the clone; `commit_all` commits
//! what is left and reports the changes since the base commit; `finish`
//! removes the clone or keeps it for a post-mortem.
//!
//! Part of the core side: no tonic, axum or sea-orm. Every git call goes
//! through `git.rs`, which runs the `git` CLI with an argument list.
//!
//! # Layout
//! - this file: the types, `prepare`, `commit_all`, `finish`.
//! - `prepare.rs`: the project checks, the clone, reusing a sandbox.
//! - `publish.rs`: `default_branch`, `rebase_and_push`.
//! - `copy.rs`: the project's untracked files (`copy` globs) copied in.
//! - `diff.rs`: a task branch's diff in the project, for review.
//! - `merge.rs`: a task branch merged or rebased into a project branch.
//! - `prune.rs`: task branches and kept sandboxes, listed and removed.
//! - `reclaim.rs`: the repository taken back from the agent (its config
//!   restored, its shape checked) before the server's git runs in it.
//! - `shared.rs`: the project's object store the clone shares (read-only
//!   for the agent; its base kept reachable in the project).
//! - `git.rs`: the one way `git` is run. `error.rs`: `SandboxError`.

mod copy;
mod diff;
mod error;
mod git;
mod merge;
mod prepare;
mod prune;
mod publish;
mod reclaim;
mod remote;
mod shared;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use tracing::{info, warn};

pub use diff::{
    BranchDiff, FileDiff, FileStatus, MAX_CONTEXT_LINES, MAX_FILE_PATCH_BYTES, MAX_PATCH_BYTES,
    branch_diff,
};
pub use error::SandboxError;
use git::git;
pub use merge::{MergeMode, Merged, merge_task};
use prepare::{
    build, check_project, merge_in, name_files, resolve_ref, reuse, snapshot, task_tips,
    uncommitted,
};
pub use prune::{TaskBranch, delete_branch, sandboxes, task_branches};
pub use publish::{default_branch, deliver, rebase_and_push};
pub use remote::{pull_into_sandbox, push_branch};
pub use shared::shared_paths;

/// Sandbox branches are named `claudomator/<task-id>`.
pub const BRANCH_PREFIX: &str = "claudomator/";

/// Kept in the sandbox's own git config, so a reused sandbox knows its base.
const BASE_COMMIT_KEY: &str = "claudomator.baseCommit";

#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Where sandboxes live, one directory per task, e.g. `<data_dir>/sandboxes`.
    pub root: PathBuf,
    /// Author and committer of the commits claudomator makes.
    pub author_name: String,
    pub author_email: String,
    /// Keep the sandbox of a failed task for inspection instead of removing it.
    pub keep_on_failure: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandbox {
    /// The clone: `<root>/<task-id>`.
    pub path: PathBuf,
    /// `claudomator/<task-id>`.
    pub branch: String,
    /// The project's HEAD when the sandbox was made; changes are counted from it.
    pub base_commit: String,
    /// Made by this `prepare` (false: an earlier attempt's, reused).
    pub fresh: bool,
    /// What a new sandbox started from, for the attempt's log; empty when
    /// reused.
    pub start: String,
    /// Tracked files with uncommitted changes in the project that are not
    /// in this new sandbox.
    pub left_out: Vec<String>,
}

/// Where a new sandbox starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Base {
    /// The project's HEAD; its uncommitted changes stay behind (named in
    /// `Sandbox::left_out`).
    #[default]
    Head,
    /// A branch, tag or commit of the project.
    Ref(String),
    /// HEAD with the project's uncommitted changes to tracked files
    /// committed on top (untracked files are not in it: see `copy`).
    WorkingTree,
    /// The work of these tasks: the first one's branch with the others'
    /// merged in (those with no branch skipped; none: HEAD).
    Tasks(Vec<String>),
}

/// One file changed since the base commit (`git diff --numstat`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChange {
    /// The path now (the new path of a renamed file).
    pub path: String,
    /// The old path when git detected a rename.
    pub renamed_from: Option<String>,
    /// Lines added and removed; both 0 for a binary file.
    pub added: u64,
    pub removed: u64,
    pub binary: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub files: Vec<FileChange>,
    /// Commits since the base commit, oldest first, including the agent's own.
    pub commits: Vec<String>,
}

impl Sandbox {
    /// Clones the project repository into `<root>/<task-id>` and checks out a
    /// new branch `claudomator/<task-id>` at the project's current HEAD.
    ///
    /// The project must be the top level of a git working tree with at least
    /// one commit and no uncommitted changes to tracked files (untracked
    /// files are ignored: they are not part of the commit the agent starts
    /// from). If `<root>/<task-id>` is already the sandbox of this task (a
    /// retry, a resumed session), it is reused as it is.
    pub async fn prepare(
        cfg: &SandboxConfig,
        project_name: &str,
        project_path: &Path,
        task_id: &str,
    ) -> Result<Sandbox, SandboxError> {
        Sandbox::prepare_from(cfg, project_name, project_path, task_id, &Base::Head).await
    }

    /// [`Sandbox::prepare`], starting from `base` instead of the project's
    /// HEAD.
    pub async fn prepare_from(
        cfg: &SandboxConfig,
        project_name: &str,
        project_path: &Path,
        task_id: &str,
        base: &Base,
    ) -> Result<Sandbox, SandboxError> {
        check_task_id(task_id)?;
        let path = cfg.root.join(task_id);
        let branch = format!("{BRANCH_PREFIX}{task_id}");
        if exists(&path).await? {
            reclaim::reclaim(&path).await?;
            let sandbox = reuse(path, branch, task_id, project_path).await?;
            info!(task_id, path = %sandbox.path.display(), "reusing sandbox");
            return Ok(sandbox);
        }

        let (project, head) = check_project(project_name, project_path).await?;
        let mut left_out = match base {
            Base::Ref(_) => Vec::new(),
            _ => uncommitted(&project).await?,
        };
        let short = |commit: &str| commit[..commit.len().min(12)].to_string();
        let mut merges = Vec::new();
        let (base_commit, mut start) = match base {
            Base::Head => (
                head.clone(),
                format!("the project's HEAD ({})", short(&head)),
            ),
            Base::Ref(reference) => {
                let commit = resolve_ref(project_name, &project, reference).await?;
                let start = format!("{reference} ({})", short(&commit));
                (commit, start)
            }
            Base::WorkingTree => match snapshot(cfg, &project, &head, task_id).await? {
                Some(commit) => {
                    let start = format!(
                        "the project's working tree: HEAD ({}) with the uncommitted changes in {} \
                         committed on top ({})",
                        short(&head),
                        name_files(&left_out),
                        short(&commit)
                    );
                    left_out.clear();
                    (commit, start)
                }
                None => (
                    head.clone(),
                    format!("the project's HEAD ({})", short(&head)),
                ),
            },
            Base::Tasks(ids) => {
                let mut found = task_tips(&project, ids).await?;
                if found.is_empty() {
                    let start = format!(
                        "the project's HEAD ({}): the tasks it depends on left no branch",
                        short(&head)
                    );
                    (head.clone(), start)
                } else {
                    let (first, commit) = found.remove(0);
                    let mut start = format!("the work of task {first} ({})", short(&commit));
                    for (other, _) in &found {
                        start.push_str(&format!(", task {other}'s merged in"));
                    }
                    merges = found;
                    (commit, start)
                }
            }
        };

        tokio::fs::create_dir_all(&cfg.root)
            .await
            .map_err(|e| SandboxError::io("create the sandbox root", &cfg.root, e))?;
        // Build in a hidden directory and rename it into place, so
        // `<root>/<task-id>` is always a complete sandbox. Task ids have no
        // dots, so this name never collides with a sandbox.
        let staging = cfg.root.join(format!(".{task_id}.partial"));
        remove_dir_if_exists(&staging).await?;
        let built = match build(cfg, &project, &staging, &branch, &base_commit).await {
            Ok(()) if merges.is_empty() => Ok(base_commit),
            Ok(()) => merge_in(cfg, &staging, &merges).await,
            Err(err) => Err(err),
        };
        let base_commit = match built {
            Ok(commit) => commit,
            Err(err) => {
                if let Err(cleanup) = remove_dir_if_exists(&staging).await {
                    warn!(task_id, error = %cleanup, "cannot remove a partial sandbox");
                }
                return Err(err);
            }
        };
        if !left_out.is_empty() {
            start.push_str(&format!(
                "; the project's uncommitted changes in {} are not in it",
                name_files(&left_out)
            ));
        }
        tokio::fs::rename(&staging, &path)
            .await
            .map_err(|e| SandboxError::io("move the new sandbox to", &path, e))?;
        reclaim::save(&path).await?;
        shared::keep_base(&project, task_id, &base_commit).await;
        info!(task_id, path = %path.display(), base_commit, "sandbox ready");
        Ok(Sandbox {
            path,
            branch,
            base_commit,
            fresh: true,
            start,
            left_out,
        })
    }

    /// Copies the project's untracked files matching `patterns` (globs,
    /// relative to the project) in; returns what was copied.
    pub async fn copy_from(
        &self,
        project: &Path,
        patterns: &[String],
    ) -> Result<Vec<String>, SandboxError> {
        copy::copy_untracked(project, &self.path, patterns).await
    }

    /// Stages everything the agent changed (new, modified and deleted files,
    /// minus what `.gitignore` ignores), commits it as the configured author
    /// if there is anything to commit, and returns every change since the
    /// base commit, the agent's own commits included.
    ///
    /// Four `git` runs when the agent made no commits of its own (the usual
    /// case): where HEAD is, add, commit, and `show` of the one new commit.
    pub async fn commit_all(
        &self,
        cfg: &SandboxConfig,
        message: &str,
    ) -> Result<Changes, SandboxError> {
        reclaim::reclaim(&self.path).await?;
        let head = self.head_on_branch().await?;
        git(&self.path, ["add", "--all"]).run().await?;
        let message = if message.trim().is_empty() {
            format!("{}: agent changes", self.branch)
        } else {
            message.to_string()
        };
        let commit = git(
            &self.path,
            ["commit", "--quiet", "--no-verify", "-m", &message],
        )
        .identity(&cfg.author_name, &cfg.author_email, true)
        .output()
        .await?;
        let committed = if commit.status.success() {
            true
        } else if nothing_to_commit(&commit) {
            false
        } else {
            return Err(git::failed("commit", &self.path, &commit));
        };
        match (head == self.base_commit, committed) {
            (true, false) => Ok(Changes::default()),
            (true, true) => self.last_commit_changes().await,
            (false, _) => self.changes().await,
        }
    }

    /// Removes the sandbox after a success; after a failure keeps it if
    /// `keep_on_failure` is set. Returns whether it was kept.
    pub async fn finish(self, cfg: &SandboxConfig, success: bool) -> Result<bool, SandboxError> {
        if !success && cfg.keep_on_failure {
            info!(path = %self.path.display(), "keeping the sandbox of a failed task");
            return Ok(true);
        }
        // The fields are public: never remove anything but `<root>/<id>`.
        let in_root = self.path.parent() == Some(cfg.root.as_path())
            && self
                .path
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| check_task_id(name).is_ok());
        if !in_root {
            return Err(SandboxError::OutsideRoot {
                path: self.path,
                root: cfg.root.clone(),
            });
        }
        remove_dir_if_exists(&self.path).await?;
        shared::release_base(&self.path).await;
        reclaim::forget(&self.path).await;
        Ok(false)
    }

    /// Every change since the base commit: files with line counts, commits.
    pub async fn changes(&self) -> Result<Changes, SandboxError> {
        let numstat = git(
            &self.path,
            [
                "diff",
                "--numstat",
                "-z",
                "-M",
                "--no-ext-diff",
                "--no-textconv",
                &self.base_commit,
                "HEAD",
                "--",
            ],
        )
        .run()
        .await?;
        let range = format!("{}..HEAD", self.base_commit);
        let commits = git(&self.path, ["rev-list", "--reverse", &range, "--"])
            .run()
            .await?;
        Ok(Changes {
            files: parse_numstat(&numstat),
            commits: commits.lines().map(str::to_string).collect(),
        })
    }

    /// The changes of HEAD alone, when it is the one commit on the base:
    /// `git show` gives its id and its numstat in one run.
    async fn last_commit_changes(&self) -> Result<Changes, SandboxError> {
        let shown = git(
            &self.path,
            [
                "show",
                "--format=%H",
                "--numstat",
                "-z",
                "-M",
                "--no-ext-diff",
                "--no-textconv",
                "HEAD",
                "--",
            ],
        )
        .run()
        .await?;
        // `<id>\0` then, after a newline, the numstat records.
        let (commit, numstat) = shown.split_once('\0').unwrap_or((&shown, ""));
        Ok(Changes {
            files: parse_numstat(numstat.trim_start_matches('\n')),
            commits: vec![commit.trim().to_string()],
        })
    }

    /// HEAD's commit, once the sandbox is known to be on its branch (the
    /// agent may have moved): one `git` for both.
    async fn head_on_branch(&self) -> Result<String, SandboxError> {
        let output = git(
            &self.path,
            ["rev-parse", "HEAD", "--symbolic-full-name", "HEAD"],
        )
        .output()
        .await?;
        if !output.status.success() {
            // An unborn branch, say: name where HEAD is if it is elsewhere.
            self.check_branch().await?;
            return Err(git::failed("rev-parse", &self.path, &output));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut lines = stdout.lines();
        let head = lines.next().unwrap_or_default().trim().to_string();
        let reference = lines.next().unwrap_or_default().trim();
        if reference.strip_prefix("refs/heads/") == Some(self.branch.as_str()) {
            return Ok(head);
        }
        let found = match reference.strip_prefix("refs/heads/") {
            Some(branch) => branch.to_string(),
            None => "a detached HEAD".to_string(),
        };
        Err(SandboxError::WrongBranch {
            path: self.path.clone(),
            expected: self.branch.clone(),
            found,
        })
    }

    /// The sandbox must still be on its branch (the agent may have moved).
    async fn check_branch(&self) -> Result<(), SandboxError> {
        let found = current_branch(&self.path).await?;
        if found.as_deref() == Some(self.branch.as_str()) {
            return Ok(());
        }
        Err(SandboxError::WrongBranch {
            path: self.path.clone(),
            expected: self.branch.clone(),
            found: found.unwrap_or_else(|| "a detached HEAD".to_string()),
        })
    }
}

/// Task ids become directory and branch names: only ASCII letters and
/// digits, so nothing escapes the root and no ref is malformed.
/// Removes a task's sandbox (if any), e.g. once its reviewed work is accepted.
pub async fn remove(cfg: &SandboxConfig, task_id: &str) -> Result<(), SandboxError> {
    check_task_id(task_id)?;
    let path = cfg.root.join(task_id);
    remove_dir_if_exists(&path).await?;
    shared::release_base(&path).await;
    reclaim::forget(&path).await;
    Ok(())
}

pub(super) fn check_task_id(task_id: &str) -> Result<(), SandboxError> {
    let valid = !task_id.is_empty()
        && task_id.len() <= 64
        && task_id.bytes().all(|b| b.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(SandboxError::InvalidTaskId(task_id.to_string()))
    }
}

/// The checked-out branch, or `None` for a detached HEAD.
async fn current_branch(dir: &Path) -> Result<Option<String>, SandboxError> {
    let output = git(dir, ["symbolic-ref", "--quiet", "HEAD"])
        .output()
        .await?;
    if !output.status.success() {
        return Ok(None);
    }
    let reference = String::from_utf8_lossy(&output.stdout).trim().to_string();
    Ok(Some(
        reference
            .strip_prefix("refs/heads/")
            .unwrap_or(&reference)
            .to_string(),
    ))
}

/// `git commit` found nothing staged (exit 1 and git's own words).
fn nothing_to_commit(output: &std::process::Output) -> bool {
    let stdout = String::from_utf8_lossy(&output.stdout);
    output.status.code() == Some(1)
        && (stdout.contains("nothing to commit") || stdout.contains("nothing added to commit"))
}

/// Parses `git diff --numstat -z`: `added\tremoved\tpath\0`, or for a rename
/// `added\tremoved\t\0old\0new\0`; a binary file counts `-\t-`.
fn parse_numstat(raw: &str) -> Vec<FileChange> {
    let mut fields = raw.split('\0');
    let mut files = Vec::new();
    while let Some(record) = fields.next() {
        let mut parts = record.splitn(3, '\t');
        let (Some(added), Some(removed), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (path, renamed_from) = if path.is_empty() {
            let from = fields.next().unwrap_or_default();
            let to = fields.next().unwrap_or_default();
            (to.to_string(), Some(from.to_string()))
        } else {
            (path.to_string(), None)
        };
        let binary = added == "-" && removed == "-";
        files.push(FileChange {
            path,
            renamed_from,
            added: added.parse().unwrap_or(0),
            removed: removed.parse().unwrap_or(0),
            binary,
        });
    }
    files
}

pub(super) async fn exists(path: &Path) -> Result<bool, SandboxError> {
    tokio::fs::try_exists(path)
        .await
        .map_err(|e| SandboxError::io("read", path, e))
}

async fn canonical(path: &Path) -> Result<PathBuf, SandboxError> {
    tokio::fs::canonicalize(path)
        .await
        .map_err(|e| SandboxError::io("resolve", path, e))
}

async fn remove_dir_if_exists(path: &Path) -> Result<(), SandboxError> {
    match tokio::fs::remove_dir_all(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SandboxError::io("remove", path, e)),
    }
}
