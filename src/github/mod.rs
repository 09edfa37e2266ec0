//! GitHub (and GitHub Enterprise Server) behind `core::codehost::CodeHost`:
//! [`GithubClient`], one per set of credentials, over reqwest with typed
//! models. `client.rs`: one REST call with GitHub's headers and the retries;
//! `ratelimit.rs`: what a limited answer asks; `auth.rs`: tokens and GitHub
//! Apps' installation tokens; `models.rs`: the JSON GitHub sends. A call on
//! a repository that GitHub answers 401 while an App's installation token
//! was cached is tried once more with a new token.

mod auth;
mod client;
mod models;
mod ratelimit;

use async_trait::async_trait;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use auth::{AppKey, Credentials, REFRESH_BEFORE};
pub use client::{API_VERSION, ApiSettings};

use crate::core::codehost::{
    Access, CodeHost, HostError, NewPull, Permission, Pull, RepoName, Repository, Secret,
};
use auth::Auth;
use client::{Api, Reply, escape};
use models::{InstallationJson, PermissionJson, PullJson, RepoJson, UserJson};

/// A GitHub API for one set of credentials.
#[derive(Debug)]
pub struct GithubClient {
    api: Api,
    auth: Auth,
}

impl GithubClient {
    pub fn new(settings: ApiSettings, credentials: Credentials) -> Result<GithubClient, HostError> {
        Ok(GithubClient {
            api: Api::new(settings)?,
            auth: Auth::new(credentials),
        })
    }

    /// The client for a project's configured credentials: the token read
    /// from its variable, or the App's key read from its file.
    pub fn from_config(
        credentials: &crate::config::GithubCredentials,
        max_rate_limit_wait: std::time::Duration,
    ) -> anyhow::Result<GithubClient> {
        use crate::config::GithubAuth;
        let secret = match &credentials.auth {
            GithubAuth::TokenEnv(name) => {
                let token = std::env::var(name).map_err(|_| {
                    anyhow::anyhow!("the environment variable `{name}` (GitHub token) is not set")
                })?;
                Credentials::Token(Secret::new(token.trim()))
            }
            GithubAuth::App {
                app_id,
                private_key_file,
            } => {
                let pem = std::fs::read(private_key_file).map_err(|e| {
                    anyhow::anyhow!("cannot read {}: {e}", private_key_file.display())
                })?;
                let key = AppKey::from_pem(&pem)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", private_key_file.display()))?;
                Credentials::App {
                    app_id: *app_id,
                    key,
                }
            }
        };
        let settings = ApiSettings {
            max_rate_limit_wait,
            ..ApiSettings::new(&credentials.api_url)
        };
        Ok(GithubClient::new(settings, secret)?)
    }

    pub fn api_url(&self) -> &str {
        &self.api.settings().api_url
    }

    /// `method path` on `repo` with its bearer; a 401 on a cached App
    /// token gets one retry with a new token.
    async fn call(
        &self,
        repo: &RepoName,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, HostError> {
        let bearer = self.auth.bearer(&self.api, repo).await?;
        let reply = self.api.send(method.clone(), path, &bearer, body).await?;
        if reply.status == 401 && self.auth.invalidate(repo).await {
            tracing::info!(repo = %repo, path, "GitHub refused the installation token: getting a new one");
            let bearer = self.auth.bearer(&self.api, repo).await?;
            return self.api.send(method, path, &bearer, body).await;
        }
        Ok(reply)
    }

    /// A call that must succeed, its answer read as `T`.
    async fn get_json<T: DeserializeOwned>(
        &self,
        repo: &RepoName,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<T, HostError> {
        let reply = self.call(repo, method, path, body).await?;
        if !reply.ok() {
            return Err(reply.error(what));
        }
        read(reply.body, what)
    }

    /// A call as the App itself (its JWT).
    async fn app_call(&self, path: &str) -> Result<Reply, HostError> {
        self.api
            .send(Method::GET, path, &self.auth.app_jwt()?, None)
            .await
    }

    async fn find_open_pull(&self, repo: &RepoName, head: &str) -> Result<Option<Pull>, HostError> {
        let path = format!(
            "{}/pulls?state=open&head={}",
            repo_path(repo),
            escape(&format!("{}:{head}", repo.owner), false)
        );
        let pulls: Vec<PullJson> = self
            .get_json(repo, Method::GET, &path, None, "listing pull requests")
            .await?;
        Ok(pulls.into_iter().next().map(PullJson::into_pull))
    }

    async fn token_access(&self, repo: &RepoName) -> Result<Access, HostError> {
        let user: UserJson = self
            .get_json(repo, Method::GET, "/user", None, "who the token is")
            .await?;
        let reply = self.call(repo, Method::GET, &repo_path(repo), None).await?;
        if reply.status == 404 {
            let why = format!(
                "{} cannot see {repo}: give the token's user access to it (write, to push and open pull requests)",
                user.login
            );
            return Ok(no_access(user.login, why));
        }
        if !reply.ok() {
            return Err(reply.error(&format!("reading {repo}")));
        }
        let found: RepoJson = read(reply.body, "a repository")?;
        let can_push = found.permissions.as_ref().is_some_and(|p| p.push);
        let missing = if can_push {
            Vec::new()
        } else {
            vec![format!(
                "push (write access) to {repo} for {}: needed to push branches and open pull requests",
                user.login
            )]
        };
        Ok(Access {
            identity: user.login,
            can_push,
            can_open_pulls: can_push,
            missing,
        })
    }

    async fn app_access(&self, repo: &RepoName) -> Result<Access, HostError> {
        let reply = self.app_call("/app").await?;
        if !reply.ok() {
            return Err(reply.error("who the App is"));
        }
        let app: models::AppJson = read(reply.body, "an App")?;
        let path = format!("{}/installation", repo_path(repo));
        let reply = self.app_call(&path).await?;
        if reply.status == 404 {
            let why = format!(
                "the App {} is not installed on {repo}: install it there",
                app.slug
            );
            return Ok(no_access(format!("app {}", app.slug), why));
        }
        if !reply.ok() {
            return Err(reply.error(&format!("the App's installation on {repo}")));
        }
        let installation: InstallationJson = read(reply.body, "an installation")?;
        let write = |name: &str| {
            installation
                .permissions
                .get(name)
                .is_some_and(|v| v == "write")
        };
        let (can_push, can_open_pulls) = (write("contents"), write("pull_requests"));
        let mut missing = Vec::new();
        for (ok, name, why) in [
            (can_push, "contents", "to push branches"),
            (can_open_pulls, "pull_requests", "to open pull requests"),
        ] {
            if !ok {
                let has = installation
                    .permissions
                    .get(name)
                    .map_or("none", String::as_str);
                missing.push(format!(
                    "the App's permission `{name}: write` on {repo} {why} (it has {has})"
                ));
            }
        }
        Ok(Access {
            identity: format!("app {} (installation {})", app.slug, installation.id),
            can_push,
            can_open_pulls,
            missing,
        })
    }
}

/// Credentials that cannot reach the repository at all.
fn no_access(identity: String, why: String) -> Access {
    Access {
        identity,
        can_push: false,
        can_open_pulls: false,
        missing: vec![why],
    }
}

/// `/repos/{owner}/{name}`.
fn repo_path(repo: &RepoName) -> String {
    format!(
        "/repos/{}/{}",
        escape(&repo.owner, false),
        escape(&repo.name, false)
    )
}

fn read<T: DeserializeOwned>(body: Value, what: &str) -> Result<T, HostError> {
    serde_json::from_value(body).map_err(|e| {
        HostError::Unavailable(format!("{what}: GitHub's answer could not be read: {e}"))
    })
}

#[async_trait]
impl CodeHost for GithubClient {
    async fn repository(&self, repo: &RepoName) -> Result<Repository, HostError> {
        let found: RepoJson = self
            .get_json(
                repo,
                Method::GET,
                &repo_path(repo),
                None,
                &format!("reading {repo}"),
            )
            .await?;
        Ok(Repository {
            name: repo.clone(),
            push_url: found.clone_url,
            default_branch: found.default_branch,
        })
    }

    async fn push_token(&self, repo: &RepoName) -> Result<Secret, HostError> {
        self.auth.bearer(&self.api, repo).await
    }

    /// An open pull request of the same head already there (a retry after
    /// a lost answer) is returned as is, labels and reviewers added again.
    async fn open_pull(&self, repo: &RepoName, pull: &NewPull) -> Result<Pull, HostError> {
        let body = json!({
            "title": pull.title, "body": pull.body, "head": pull.head,
            "base": pull.base, "draft": pull.draft,
        });
        let path = format!("{}/pulls", repo_path(repo));
        let reply = self.call(repo, Method::POST, &path, Some(&body)).await?;
        let opened = if reply.ok() {
            read::<PullJson>(reply.body, "a pull request")?.into_pull()
        } else if reply.status == 422 && reply.message().contains("already exists") {
            match self.find_open_pull(repo, &pull.head).await? {
                Some(existing) => existing,
                None => return Err(reply.error("opening a pull request")),
            }
        } else {
            return Err(reply.error("opening a pull request"));
        };
        if !pull.labels.is_empty() {
            let path = format!("{}/issues/{}/labels", repo_path(repo), opened.number);
            let body = json!({ "labels": pull.labels });
            let reply = self.call(repo, Method::POST, &path, Some(&body)).await?;
            if !reply.ok() {
                return Err(reply.error(&format!("labelling pull request #{}", opened.number)));
            }
        }
        if !pull.reviewers.is_empty() {
            let path = format!(
                "{}/pulls/{}/requested_reviewers",
                repo_path(repo),
                opened.number
            );
            let body = json!({ "reviewers": pull.reviewers });
            let reply = self.call(repo, Method::POST, &path, Some(&body)).await?;
            if reply.status == 422 {
                // A reviewer GitHub will not ask (not a collaborator, the
                // author): the pull request stands without them.
                tracing::warn!(repo = %repo, number = opened.number, reason = %reply.message(), "reviewers not requested");
            } else if !reply.ok() {
                return Err(reply.error(&format!("asking reviewers of #{}", opened.number)));
            }
        }
        Ok(opened)
    }

    async fn pull(&self, repo: &RepoName, number: u64) -> Result<Pull, HostError> {
        let path = format!("{}/pulls/{number}", repo_path(repo));
        let found: PullJson = self
            .get_json(
                repo,
                Method::GET,
                &path,
                None,
                &format!("pull request #{number}"),
            )
            .await?;
        Ok(found.into_pull())
    }

    async fn comment(&self, repo: &RepoName, number: u64, body: &str) -> Result<(), HostError> {
        let path = format!("{}/issues/{number}/comments", repo_path(repo));
        let reply = self
            .call(repo, Method::POST, &path, Some(&json!({ "body": body })))
            .await?;
        if !reply.ok() {
            return Err(reply.error(&format!("commenting on #{number}")));
        }
        Ok(())
    }

    async fn permission(&self, repo: &RepoName, login: &str) -> Result<Permission, HostError> {
        let path = format!(
            "{}/collaborators/{}/permission",
            repo_path(repo),
            escape(login, false)
        );
        let reply = self.call(repo, Method::GET, &path, None).await?;
        if reply.status == 404 {
            return Ok(Permission::None);
        }
        if !reply.ok() {
            return Err(reply.error(&format!("{login}'s permission on {repo}")));
        }
        let found: PermissionJson = read(reply.body, "a permission")?;
        // `role_name` tells maintain and triage apart; `permission` does not.
        Ok(Permission::parse(
            found.role_name.as_deref().unwrap_or(&found.permission),
        ))
    }

    async fn delete_branch(&self, repo: &RepoName, branch: &str) -> Result<(), HostError> {
        let path = format!(
            "{}/git/refs/heads/{}",
            repo_path(repo),
            escape(branch, true)
        );
        let reply = self.call(repo, Method::DELETE, &path, None).await?;
        let gone = reply.status == 404
            || (reply.status == 422 && reply.message().contains("Reference does not exist"));
        if reply.ok() || gone {
            return Ok(());
        }
        Err(reply.error(&format!("deleting branch {branch}")))
    }

    async fn access(&self, repo: &RepoName) -> Result<Access, HostError> {
        if self.auth.is_app() {
            self.app_access(repo).await
        } else {
            self.token_access(repo).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_credential() {
        let client = GithubClient::new(
            ApiSettings::new("https://api.github.com"),
            Credentials::Token(Secret::new("ghp_very_secret_token")),
        )
        .unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("ghp_very_secret_token"), "{shown}");
        assert!(shown.contains("Token(***)"), "{shown}");
    }
}
