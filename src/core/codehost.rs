//! The seam to a code host (GitHub, GitHub Enterprise Server): what the core
//! asks of it to turn a task's branch into a pull request and to hear back,
//! in core terms. The HTTP client behind it (credentials, GitHub Apps'
//! installation tokens, rate limits) lives in `crate::github`; the core never
//! sees reqwest, and never sees a token except as a [`Secret`] it hands to
//! git through a credential helper.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

/// `owner/name` of a repository on the host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RepoName {
    pub owner: String,
    pub name: String,
}

impl RepoName {
    /// Reads `owner/name`, or a repository's URL as GitHub shows it
    /// (`https://github.com/owner/name(.git)`, `git@github.com:owner/name.git`);
    /// anything else (no slash, empty parts, more slashes) is `None`.
    pub fn parse(text: &str) -> Option<RepoName> {
        let text = text.trim().trim_end_matches('/');
        let path = match text.split_once("://") {
            Some((_, rest)) => rest.split_once('/')?.1.trim_end_matches(".git"),
            None => match text.strip_prefix("git@") {
                Some(rest) => rest.split_once(':')?.1.trim_end_matches(".git"),
                None => text,
            },
        };
        let (owner, name) = path.split_once('/')?;
        if owner.is_empty() || name.is_empty() || name.contains('/') {
            return None;
        }
        Some(RepoName {
            owner: owner.to_string(),
            name: name.to_string(),
        })
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// A credential. Its `Debug` and `Display` never show it, so it cannot reach
/// a log by accident; [`Secret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What the core needs to know of a repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repository {
    pub name: RepoName,
    /// Where git pushes (`clone_url`: https, or in tests a local path).
    pub push_url: String,
    pub default_branch: String,
}

/// A pull request to open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewPull {
    pub title: String,
    pub body: String,
    /// The branch with the work (`claudomator/<task-id>`).
    pub head: String,
    /// The branch it should merge into.
    pub base: String,
    pub draft: bool,
    pub labels: Vec<String>,
    pub reviewers: Vec<String>,
}

/// Where a pull request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PullState {
    Open,
    Closed,
    Merged,
}

impl PullState {
    pub fn as_str(self) -> &'static str {
        match self {
            PullState::Open => "open",
            PullState::Closed => "closed",
            PullState::Merged => "merged",
        }
    }

    pub fn parse(text: &str) -> Option<PullState> {
        match text {
            "open" => Some(PullState::Open),
            "closed" => Some(PullState::Closed),
            "merged" => Some(PullState::Merged),
            _ => None,
        }
    }
}

/// A pull request as the host has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pull {
    pub number: u64,
    /// Where a person opens it (`html_url`).
    pub url: String,
    pub state: PullState,
    pub head_ref: String,
    pub head_sha: String,
    pub base_ref: String,
}

/// A user's permission on a repository, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    None,
    Read,
    Triage,
    Write,
    Maintain,
    Admin,
}

impl Permission {
    /// May this user's feedback make an agent run (and spend money)?
    pub fn can_write(self) -> bool {
        self >= Permission::Write
    }

    /// GitHub's `permission` / `role_name` words; unknown words are `None`.
    pub fn parse(text: &str) -> Permission {
        match text {
            "admin" => Permission::Admin,
            "maintain" => Permission::Maintain,
            "write" | "push" => Permission::Write,
            "triage" => Permission::Triage,
            "read" | "pull" => Permission::Read,
            _ => Permission::None,
        }
    }
}

/// What the credentials may do on a repository, for `doctor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// Who the credentials are: a user's login, or `app <slug>
    /// (installation <id>)`.
    pub identity: String,
    pub can_push: bool,
    pub can_open_pulls: bool,
    /// What is missing, in words a person can act on (empty: nothing).
    pub missing: Vec<String>,
}

/// What went wrong talking to the host, in words a person can act on. Never
/// carries a token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// No credentials, or the host refused them (401).
    #[error("GitHub refused the credentials: {0}")]
    Unauthorized(String),
    /// The credentials work but may not do this (403 that is not a rate
    /// limit): which permission is missing, when the host says.
    #[error("GitHub refused: {0}")]
    Forbidden(String),
    #[error("not found on GitHub: {0}")]
    NotFound(String),
    /// The host refused the request as invalid (422): its message.
    #[error("GitHub refused the request: {0}")]
    Invalid(String),
    /// Rate limited for longer than the client is willing to wait.
    #[error("GitHub rate limit: {0}")]
    RateLimited(String),
    /// Unreachable, 5xx after retries, or an answer that could not be read.
    #[error("GitHub unavailable: {0}")]
    Unavailable(String),
}

/// A code host, for one configured set of credentials. Implementations retry
/// and wait out rate limits themselves; an error here is final for this call.
#[async_trait]
pub trait CodeHost: Send + Sync {
    /// The repository's push URL and default branch.
    async fn repository(&self, repo: &RepoName) -> Result<Repository, HostError>;

    /// A token git may push with, valid for at least the next ten minutes.
    /// Handed to git through a credential helper, never in a URL or a file.
    async fn push_token(&self, repo: &RepoName) -> Result<Secret, HostError>;

    /// Opens a pull request, then adds its labels and asks its reviewers.
    async fn open_pull(&self, repo: &RepoName, pull: &NewPull) -> Result<Pull, HostError>;

    async fn pull(&self, repo: &RepoName, number: u64) -> Result<Pull, HostError>;

    /// Comments on a pull request's conversation.
    async fn comment(&self, repo: &RepoName, number: u64, body: &str) -> Result<(), HostError>;

    /// The user's permission on the repository (`None` when they have none).
    async fn permission(&self, repo: &RepoName, login: &str) -> Result<Permission, HostError>;

    /// Deletes a branch; one already gone is not an error.
    async fn delete_branch(&self, repo: &RepoName, branch: &str) -> Result<(), HostError>;

    /// Who the credentials are and whether they may push to the repository
    /// and open pull requests there (`doctor`). A host that cannot tell
    /// says so.
    async fn access(&self, repo: &RepoName) -> Result<Access, HostError> {
        Err(HostError::Unavailable(format!(
            "this code host cannot check its access to {repo}"
        )))
    }
}

/// A project's repository on its code host.
#[derive(Clone)]
pub struct ProjectHost {
    pub repo: RepoName,
    pub host: Arc<dyn CodeHost>,
}

/// The code host of each project with a `github = "owner/name"` and
/// credentials, by project name (built once at start-up, one client per
/// distinct set of credentials, shared by the projects that use it).
#[derive(Clone, Default)]
pub struct CodeHosts {
    by_project: BTreeMap<String, ProjectHost>,
}

impl CodeHosts {
    pub fn new() -> Self {
        CodeHosts::default()
    }

    pub fn insert(&mut self, project: impl Into<String>, repo: RepoName, host: Arc<dyn CodeHost>) {
        self.by_project
            .insert(project.into(), ProjectHost { repo, host });
    }

    /// The project's repository and host; None when it has none.
    pub fn get(&self, project: &str) -> Option<&ProjectHost> {
        self.by_project.get(project)
    }

    /// Every project with a host, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ProjectHost)> {
        self.by_project.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn is_empty(&self) -> bool {
        self.by_project.is_empty()
    }
}

/// What `doctor` says of one project's repository on its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostCheck {
    pub project: String,
    pub repo: String,
    /// May push and open pull requests.
    pub ok: bool,
    /// Who the credentials are and what they may do, or what is missing.
    pub detail: String,
}

/// How long `doctor` waits for one project's check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

impl CodeHosts {
    /// Every project's [`CodeHost::access`], checked at once, by project.
    pub async fn check_all(&self) -> Vec<HostCheck> {
        let mut checks = tokio::task::JoinSet::new();
        for (project, ph) in self.iter() {
            let (project, ph) = (project.to_string(), ph.clone());
            checks.spawn(async move {
                let access = tokio::time::timeout(CHECK_TIMEOUT, ph.host.access(&ph.repo)).await;
                let (ok, detail) = match access {
                    Err(_) => (
                        false,
                        format!("no answer within {} s", CHECK_TIMEOUT.as_secs()),
                    ),
                    Ok(Err(e)) => (false, e.to_string()),
                    Ok(Ok(a)) if a.missing.is_empty() && a.can_push && a.can_open_pulls => (
                        true,
                        format!("{}: can push and open pull requests", a.identity),
                    ),
                    Ok(Ok(a)) => (
                        false,
                        format!("{}: missing {}", a.identity, a.missing.join("; ")),
                    ),
                };
                HostCheck {
                    project,
                    repo: ph.repo.to_string(),
                    ok,
                    detail,
                }
            });
        }
        let mut all = checks.join_all().await;
        all.sort_by(|a, b| a.project.cmp(&b.project));
        all
    }
}

impl fmt::Debug for CodeHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.by_project.iter().map(|(k, v)| (k, v.repo.to_string())))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::new("ghs_abcdef");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        assert_eq!(s.expose(), "ghs_abcdef");
    }

    #[test]
    fn repo_names_and_permissions_read_githubs_words() {
        assert_eq!(RepoName::parse("o/r").unwrap().to_string(), "o/r");
        for url in [
            "https://github.com/o/r",
            "https://github.com/o/r.git",
            "git@github.com:o/r.git",
        ] {
            assert_eq!(RepoName::parse(url).unwrap().to_string(), "o/r", "{url}");
        }
        for bad in ["o", "/r", "o/", "o/r/x", "", "https://github.com/o"] {
            assert_eq!(RepoName::parse(bad), None, "{bad}");
        }
        assert!(Permission::parse("maintain").can_write());
        assert!(Permission::parse("push").can_write());
        assert!(!Permission::parse("triage").can_write());
        assert!(!Permission::parse("none").can_write());
        assert_eq!(PullState::parse("merged"), Some(PullState::Merged));
    }
}
