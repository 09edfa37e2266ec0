//! Publishing a sandbox branch: find the project's default branch, rebase
//! the sandbox branch onto it, push the result.

use std::path::{Path, PathBuf};

use tracing::info;

use super::error::SandboxError;
use super::git::{self, git};
use super::{Sandbox, SandboxConfig};

/// The project's default branch, in this order:
/// 1. the HEAD of its remote (`refs/remotes/origin/HEAD`, or of the only
///    remote when none is called `origin`), as set by a clone or
///    `git remote set-head`;
/// 2. `init.defaultBranch`, if a local branch of that name exists;
/// 3. the only local branch;
/// 4. the checked-out branch.
///
/// It never asks the network and never assumes `master` or `main`.
pub async fn default_branch(repo: &Path) -> Result<String, SandboxError> {
    let remotes = git(repo, ["remote"]).user_config().run().await?;
    let remotes: Vec<&str> = remotes.lines().collect();
    let remote = match remotes.as_slice() {
        _ if remotes.contains(&"origin") => Some("origin"),
        [only] => Some(*only),
        _ => None,
    };
    if let Some(remote) = remote {
        let head = format!("refs/remotes/{remote}/HEAD");
        if let Some(target) = symbolic_ref(repo, &head).await?
            && let Some(branch) = target.strip_prefix(&format!("refs/remotes/{remote}/"))
        {
            return Ok(branch.to_string());
        }
    }

    let branches = git(repo, ["for-each-ref", "--format=%(refname)", "refs/heads/"])
        .user_config()
        .run()
        .await?;
    let branches: Vec<&str> = branches
        .lines()
        .filter_map(|name| name.strip_prefix("refs/heads/"))
        .collect();
    let configured = git(repo, ["config", "--get", "init.defaultBranch"])
        .user_config()
        .output()
        .await?;
    let configured = String::from_utf8_lossy(&configured.stdout);
    let configured = configured.trim();
    if !configured.is_empty() && branches.contains(&configured) {
        return Ok(configured.to_string());
    }
    if let [only] = branches.as_slice() {
        return Ok(only.to_string());
    }
    if let Some(target) = symbolic_ref(repo, "HEAD").await?
        && let Some(branch) = target.strip_prefix("refs/heads/")
    {
        return Ok(branch.to_string());
    }
    Err(SandboxError::NoDefaultBranch {
        path: repo.to_path_buf(),
    })
}

/// Rebases the sandbox branch onto the project's `default_branch` (as the
/// project repository has it now) and pushes it, forced, to
/// `refs/heads/claudomator/<task-id>` of `remote_url_or_name`.
///
/// `remote_url_or_name` is the name of one of the project's remotes, or a
/// URL or absolute path. The branch belongs to the task, so the push
/// replaces whatever an earlier attempt pushed. Commit everything first
/// (`commit_all`). On conflicts the rebase is undone and the branch left as
/// it was. Afterwards `sandbox.base_commit` no longer bounds the branch's
/// own commits: publish last.
pub async fn rebase_and_push(
    sandbox: &Sandbox,
    cfg: &SandboxConfig,
    remote_url_or_name: &str,
    default_branch: &str,
) -> Result<(), SandboxError> {
    let dir = &sandbox.path;
    check_branch_name(dir, default_branch).await?;
    sandbox.check_branch().await?;
    let clean = git(dir, ["diff", "--quiet", "HEAD", "--"])
        .succeeds()
        .await?;
    if !clean {
        return Err(SandboxError::DirtySandbox { path: dir.clone() });
    }
    let destination = resolve_remote(dir, remote_url_or_name).await?;

    // The sandbox's origin is the project repository it was cloned from.
    let onto = format!("refs/remotes/origin/{default_branch}");
    let refspec = format!("+refs/heads/{default_branch}:{onto}");
    git(dir, ["fetch", "--quiet", "--no-tags", "origin", &refspec])
        .run()
        .await?;
    let rebase = git(dir, ["rebase", "--quiet", &onto])
        .identity(&cfg.author_name, &cfg.author_email, false)
        .output()
        .await?;
    if !rebase.status.success() {
        let files = git::conflicted(dir).await?;
        // Undo whatever the rebase left; this fails harmlessly if none is
        // in progress.
        git(dir, ["rebase", "--abort"]).output().await?;
        if files.is_empty() {
            return Err(git::failed("rebase", dir, &rebase));
        }
        return Err(SandboxError::RebaseConflict {
            path: dir.clone(),
            branch: sandbox.branch.clone(),
            onto: default_branch.to_string(),
            files: files.join(", "),
        });
    }

    let target = format!("+HEAD:refs/heads/{}", sandbox.branch);
    git(dir, ["push", "--quiet", "--", &destination, &target])
        .user_config()
        .run()
        .await?;
    info!(branch = %sandbox.branch, onto = default_branch, "sandbox branch rebased and pushed");
    Ok(())
}

/// Pushes the sandbox branch, as it is, into the project repository it was
/// cloned from (`refs/heads/claudomator/<task-id>`), so the work outlives
/// the sandbox. The project's checkout and its other branches are untouched.
/// The branch itself is pushed, wherever the sandbox's HEAD is (`commit_all`
/// has checked it), in one `git`.
pub async fn deliver(sandbox: &Sandbox) -> Result<(), SandboxError> {
    let branch = format!("refs/heads/{}", sandbox.branch);
    let refspec = format!("+{branch}:{branch}");
    git(&sandbox.path, ["push", "--quiet", "origin", &refspec])
        .run()
        .await?;
    info!(branch = %sandbox.branch, "sandbox branch delivered to the project");
    Ok(())
}

/// A name of one of the project's remotes becomes its URL; anything else
/// that looks like a bare name is an unknown remote; URLs and paths pass.
async fn resolve_remote(sandbox: &Path, remote: &str) -> Result<String, SandboxError> {
    let project = PathBuf::from(git(sandbox, ["remote", "get-url", "origin"]).run().await?);
    let unknown = || SandboxError::UnknownRemote {
        project: project.clone(),
        name: remote.to_string(),
    };
    if remote.is_empty() || remote.starts_with('-') {
        return Err(unknown());
    }
    let looks_like_name = !remote.contains(['/', ':', '\\']) && !remote.starts_with('.');
    if !looks_like_name {
        return Ok(remote.to_string());
    }
    let url = git(&project, ["remote", "get-url", remote])
        .user_config()
        .output()
        .await?;
    if !url.status.success() {
        return Err(unknown());
    }
    Ok(String::from_utf8_lossy(&url.stdout).trim().to_string())
}

async fn check_branch_name(dir: &Path, name: &str) -> Result<(), SandboxError> {
    let reference = format!("refs/heads/{name}");
    let valid = !name.starts_with('-')
        && git(dir, ["check-ref-format", &reference])
            .succeeds()
            .await?;
    if valid {
        Ok(())
    } else {
        Err(SandboxError::InvalidBranch(name.to_string()))
    }
}

/// What a symbolic ref points at, or `None` if it is not one (or missing).
async fn symbolic_ref(repo: &Path, name: &str) -> Result<Option<String>, SandboxError> {
    let output = git(repo, ["symbolic-ref", "--quiet", name])
        .output()
        .await?;
    if !output.status.success() {
        return Ok(None);
    }
    Ok(Some(
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
    ))
}
