//! Pushing a task's branch to a code host with a token: the token reaches
//! git through a credential helper that reads it from an environment
//! variable set on that one git process, never through a URL, the
//! repository's config or a file an agent could read. The user's own
//! helpers are switched off for the call (`credential.helper=` first).

use std::path::Path;

use tracing::info;

use super::error::SandboxError;
use super::git::git;
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
    // Config through the environment of this one process (git 2.31+):
    // the helper list emptied, then ours.
    let mut push = git(repo, ["push", "--quiet", "--", url, &refspec])
        .env("GIT_CONFIG_COUNT", "2")
        .env("GIT_CONFIG_KEY_0", "credential.helper")
        .env("GIT_CONFIG_VALUE_0", "")
        .env("GIT_CONFIG_KEY_1", "credential.helper")
        .env("GIT_CONFIG_VALUE_1", HELPER);
    if let Some(token) = token {
        push = push.env(TOKEN_VAR, token.expose());
    }
    push.run().await?;
    info!(branch, sha = %sha, "branch pushed to the code host");
    Ok(sha)
}
