//! `SandboxError`: what went wrong with a project repository or a sandbox,
//! each message saying what to fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid task id `{0}`: a sandbox id may only contain ASCII letters and digits")]
    InvalidTaskId(String),

    #[error("project `{project}`: {} does not exist", path.display())]
    ProjectMissing { project: String, path: PathBuf },

    #[error("project `{project}`: {} is not a git repository", path.display())]
    NotARepository { project: String, path: PathBuf },

    #[error(
        "project `{project}`: {} is inside the git repository {}; point the project at {}",
        path.display(), toplevel.display(), toplevel.display()
    )]
    NotTopLevel {
        project: String,
        path: PathBuf,
        toplevel: PathBuf,
    },

    #[error("project `{project}`: the repository in {} has no commits yet: make a first commit", path.display())]
    EmptyRepository { project: String, path: PathBuf },

    #[error(
        "project `{project}`: `{reference}` is not a branch, tag or commit of the repository in {}: \
         fetch it there first",
        path.display()
    )]
    UnknownRef {
        project: String,
        path: PathBuf,
        reference: String,
    },

    #[error(
        "the work this task starts from does not merge: task {task_id}'s branch conflicts \
         in {files} (start it from one of them with base_ref, or from HEAD)"
    )]
    StartConflict { task_id: String, files: String },

    #[error(
        "{} already exists but is not the sandbox of task {task_id} ({reason}): remove it to start over",
        path.display()
    )]
    SandboxConflict {
        path: PathBuf,
        task_id: String,
        reason: String,
    },

    #[error("sandbox {} is on {found}, not on branch {expected}: check out {expected} again", path.display())]
    WrongBranch {
        path: PathBuf,
        expected: String,
        found: String,
    },

    #[error("sandbox {} has uncommitted changes: commit them (commit_all) before publishing", path.display())]
    DirtySandbox { path: PathBuf },

    #[error("`{0}` is not a valid branch name")]
    InvalidBranch(String),

    #[error("project {} has no remote `{name}`: add it with `git remote add` or pass a URL", project.display())]
    UnknownRemote { project: PathBuf, name: String },

    #[error(
        "rebasing {branch} onto {onto} stopped on conflicts in {files}: the branch was left as it was; \
         merge by hand in {} or run the task again on the new {onto}",
        path.display()
    )]
    RebaseConflict {
        path: PathBuf,
        branch: String,
        onto: String,
        files: String,
    },

    #[error(
        "cannot tell the default branch of {}: run `git remote set-head origin --auto` or check out the default branch",
        path.display()
    )]
    NoDefaultBranch { path: PathBuf },

    #[error("{} is not directly inside the sandbox root {}: refusing to remove it", path.display(), root.display())]
    OutsideRoot { path: PathBuf, root: PathBuf },

    #[error("git {subcommand} failed in {}: {stderr}", dir.display())]
    Git {
        subcommand: String,
        dir: PathBuf,
        stderr: String,
    },

    #[error(
        "the agent left the repository in {} so that git would act outside it ({reason}): \
         its changes are not committed",
        path.display()
    )]
    Tampered { path: PathBuf, reason: String },

    #[error(
        "cannot copy into {}: that place in the sandbox is a symbolic link or a directory \
         (committed so?); nothing is copied through a link",
        path.display()
    )]
    CopyBlocked { path: PathBuf },

    #[error(
        "there is no branch {branch} in {}: the task has not finished an attempt that \
         changed something (or its branch was deleted)",
        project.display()
    )]
    NoBranch { project: PathBuf, branch: String },

    #[error(
        "{} is on {branch} with uncommitted changes in {files}: commit or stash them, or \
         merge into another branch",
        path.display()
    )]
    DirtyTarget {
        path: PathBuf,
        branch: String,
        files: String,
    },

    #[error(
        "{branch} does not merge into {into}: conflicts in {files}; nothing was changed \
         (merge it by hand, or send the task back to resolve them)"
    )]
    MergeConflict {
        branch: String,
        into: String,
        files: String,
    },

    #[error("cannot run git: {source}: install git and put it on PATH")]
    GitUnavailable { source: std::io::Error },

    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl SandboxError {
    pub(super) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        SandboxError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
