//! Pushing a task's branch to a code host with a token: the token reaches
//! git through a credential helper that reads it from an environment
//! variable set on that one git process, never through a URL, the
//! repository's config or a file an agent could read. The user's own
//! helpers are switched off for the call (`credential.helper=` first).

use std::path::Path;

use tracing::info;

use super::error::SandboxError;
use super::git::{self, Git, git};
use super::{SandboxConfig, check_task_id, exists, reclaim};
use crate::core::codehost::Secret;

/// The variable the helper reads.
const TOKEN_VAR: &str = "CLAUDOMATOR_GIT_TOKEN";

/// The helper: answers `get` with GitHub's user name for tokens and the
/// token from the environment; `store` and `erase` do nothing.
const HELPER: &str = "!f() { test \"$1\" = get || exit 0; \
                      echo username=x-access-token; echo \"password=${CLAUDOMATOR_GIT_TOKEN}\"; }; f";

/// Pushes `refs/heads/<branch>` of the repository at `repo` to the same
/// branch at `url` and returns the commit pushed. `force`: replace what is
/// there (a branch claudomator owns, never pushed before); otherwise only
/// a fast-forward, so commits people pushed to it are never lost.
pub async fn push_branch(
    repo: &Path,
    url: &str,
    branch: &str,
    token: Option<&Secret>,
    force: bool,
) -> Result<String, SandboxError> {
    let local = format!("refs/heads/{branch}");
    let sha = git(repo, ["rev-parse", "--verify", &local]).run().await?;
    let refspec = format!("{}{local}:{local}", if force { "+" } else { "" });
    with_token(git(repo, ["push", "--quiet", "--", url, &refspec]), token)
        .run()
        .await?;
    info!(branch, sha = %sha, "branch pushed to the code host");
    Ok(sha)
}

/// Config through the environment of this one git process (git 2.31+):
/// the helper list emptied, then ours, and the token for it.
fn with_token(command: Git, token: Option<&Secret>) -> Git {
    let command = command
        .env("GIT_CONFIG_COUNT", "2")
        .env("GIT_CONFIG_KEY_0", "credential.helper")
        .env("GIT_CONFIG_VALUE_0", "")
        .env("GIT_CONFIG_KEY_1", "credential.helper")
        .env("GIT_CONFIG_VALUE_1", HELPER);
    match token {
        Some(token) => command.env(TOKEN_VAR, token.expose()),
        None => command,
    }
}

/// Brings the commits people pushed to the task's branch at `url` into its
/// kept sandbox (`<root>/<task-id>`), before its agent resumes there:
/// fetched with the token as a push is, then fast-forwarded or merged. The
/// commits brought in, oldest first; none when nothing is new or this
/// server has no sandbox of the task. A conflict leaves the sandbox as it
/// was (the error names the files).
pub async fn pull_into_sandbox(
    cfg: &SandboxConfig,
    task_id: &str,
    url: &str,
    token: Option<&Secret>,
) -> Result<Vec<String>, SandboxError> {
    check_task_id(task_id)?;
    let dir = cfg.root.join(task_id);
    if !exists(&dir).await? {
        return Ok(Vec::new());
    }
    reclaim::reclaim(&dir).await?;
    let branch = format!("refs/heads/claudomator/{task_id}");
    let fetch = git(&dir, ["fetch", "--quiet", "--no-tags", "--", url, &branch]);
    with_token(fetch, token).run().await?;
    let new = git(&dir, ["rev-list", "--reverse", "HEAD..FETCH_HEAD"])
        .run()
        .await?;
    let new: Vec<String> = new.lines().map(str::to_string).collect();
    if new.is_empty() {
        return Ok(new);
    }
    let message = "claudomator: take the commits pushed to the pull request";
    let merged = git(&dir, ["merge", "--quiet", "-m", message, "FETCH_HEAD"])
        .identity(&cfg.author_name, &cfg.author_email, true)
        .output()
        .await?;
    if !merged.status.success() {
        let files = git::conflicted(&dir).await?;
        git(&dir, ["merge", "--abort"]).output().await?;
        if files.is_empty() {
            return Err(git::failed("merge", &dir, &merged));
        }
        return Err(SandboxError::RebaseConflict {
            path: dir.clone(),
            branch: format!("claudomator/{task_id}"),
            onto: format!("the pull request's commits ({})", new.join(", ")),
            files: files.join(", "),
        });
    }
    info!(
        task_id,
        commits = new.len(),
        "pull request commits merged into the sandbox"
    );
    Ok(new)
}
