//! A scripted GitHub REST API on `127.0.0.1:0` (axum, a tokio task of the
//! test's runtime, stopped when dropped), for the GitHub client, `doctor`
//! and the pull-request loop. Every request is checked against GitHub's own
//! OpenAPI description (`openapi.rs`: operation by method and path template,
//! required parameters, body schema) and a `User-Agent`; one that matches no
//! operation, fails the check or is valid but not scripted here is answered
//! like GitHub (404/422/501) and recorded as a violation: tests end with
//! `api.assert_no_violations()`.
//!
//! State is in memory: users with tokens and their permission per
//! repository, GitHub Apps (public key, installations with permissions,
//! installation tokens with an expiry the test sets), repositories (a
//! `clone_url` anywhere, e.g. a local bare repository whose branches are
//! then read and deleted with git), pulls, labels, requested reviewers and
//! issue comments. Faults: secondary rate limits on a path, the primary
//! limit exhausted until a reset, installation tokens expired at once, 5xx
//! answers on a path.
//! Every answer has `x-ratelimit-*` headers. A path prefix (`/api/v3`)
//! stands for GitHub Enterprise Server.
#![allow(dead_code)]

mod openapi;
mod routes;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub use openapi::spec;

/// How a request authenticated, as the server read it (never the token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthKind {
    None,
    /// A user's token (personal access token).
    UserToken,
    /// A GitHub App's JWT.
    AppJwt,
    InstallationToken,
    /// A bearer the server does not know.
    Unknown,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Without the prefix and the query.
    pub path: String,
    pub query: String,
    pub operation: Option<String>,
    pub auth: AuthKind,
    /// Which installation token (1 for the first issued, ...), to tell a
    /// refreshed token from the old one without reading either.
    pub installation_token: Option<usize>,
    pub status: u16,
    pub at: SystemTime,
}

pub(crate) struct Repo {
    pub id: u64,
    pub owner: String,
    pub name: String,
    pub clone_url: String,
    pub default_branch: String,
    pub private: bool,
    /// Branches read from and deleted in this git repository, when set.
    pub git_dir: Option<PathBuf>,
    /// Branch → sha, when there is no git repository.
    pub branches: BTreeMap<String, String>,
    /// Login → GitHub's permission word.
    pub permissions: HashMap<String, String>,
    pub next_number: u64,
}

pub(crate) struct PullRec {
    pub repo: String,
    pub number: u64,
    pub title: String,
    pub body: String,
    pub head: String,
    pub head_sha: String,
    pub base: String,
    pub draft: bool,
    pub state: String,
    pub merged: bool,
    pub labels: Vec<String>,
    pub reviewers: Vec<String>,
    pub user: String,
}

pub(crate) struct CommentRec {
    pub id: u64,
    pub repo: String,
    pub number: u64,
    pub body: String,
    pub user: String,
}

pub(crate) struct App {
    pub slug: String,
    pub public_key_pem: String,
}

pub(crate) struct Installation {
    pub app_id: u64,
    pub repos: Vec<String>,
    /// GitHub's permission names → `read`/`write`.
    pub permissions: BTreeMap<String, String>,
}

pub(crate) struct IssuedToken {
    pub installation: u64,
    pub ordinal: usize,
    pub expires_at: SystemTime,
}

pub(crate) struct SecondaryLimit {
    pub path: String,
    pub remaining: usize,
    pub retry_after: u64,
}

pub(crate) struct ServerError {
    pub path: String,
    pub remaining: usize,
    pub status: u16,
}

pub(crate) struct State {
    pub prefix: String,
    pub users: HashMap<String, String>,
    pub user_ids: HashMap<String, u64>,
    pub apps: HashMap<u64, App>,
    pub installations: HashMap<u64, Installation>,
    pub installation_tokens: HashMap<String, IssuedToken>,
    pub token_lifetime: Duration,
    pub repos: BTreeMap<String, Repo>,
    pub pulls: Vec<PullRec>,
    pub comments: Vec<CommentRec>,
    pub secondary: Vec<SecondaryLimit>,
    pub server_errors: Vec<ServerError>,
    /// The primary limit is exhausted until then.
    pub exhausted_until: Option<SystemTime>,
    pub used: u64,
    pub next_id: u64,
    pub requests: Vec<Request>,
    pub violations: Vec<String>,
}

/// The key of a repository in the state: `owner/name`, lower case (GitHub
/// names are case-insensitive).
pub(crate) fn repo_key(owner: &str, name: &str) -> String {
    format!("{owner}/{name}").to_lowercase()
}

pub(crate) fn epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

pub struct GithubApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GithubApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GithubApi {
    /// As api.github.com: no path prefix.
    pub async fn start() -> GithubApi {
        GithubApi::start_at("").await
    }

    /// With a path prefix, as GitHub Enterprise Server (`/api/v3`).
    pub async fn start_at(prefix: &str) -> GithubApi {
        spec();
        let state = Arc::new(Mutex::new(State {
            prefix: prefix.trim_end_matches('/').to_string(),
            users: HashMap::new(),
            user_ids: HashMap::new(),
            apps: HashMap::new(),
            installations: HashMap::new(),
            installation_tokens: HashMap::new(),
            token_lifetime: Duration::from_secs(3600),
            repos: BTreeMap::new(),
            pulls: Vec::new(),
            comments: Vec::new(),
            secondary: Vec::new(),
            server_errors: Vec::new(),
            exhausted_until: None,
            used: 0,
            next_id: 1000,
            requests: Vec::new(),
            violations: Vec::new(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("github api binds 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let app = routes::router(state.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("github api: {e}");
            }
        });
        GithubApi { addr, state, task }
    }

    /// What `api_url` the client is given (with the prefix).
    pub fn api_url(&self) -> String {
        let prefix = self.state.lock().unwrap().prefix.clone();
        format!("http://{}{prefix}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A user and the token that authenticates as them.
    pub fn add_user(&self, login: &str, token: &str) {
        let mut s = self.state.lock().unwrap();
        s.next_id += 1;
        let id = s.next_id;
        s.users.insert(token.to_string(), login.to_string());
        s.user_ids.insert(login.to_string(), id);
    }

    /// A private repository (`owner/name`) with default branch `main`
    /// (which exists) and a `clone_url` on github.com.
    pub fn add_repo(&self, full_name: &str) {
        let (owner, name) = full_name.split_once('/').expect("owner/name");
        let mut s = self.state.lock().unwrap();
        s.next_id += 1;
        let repo = Repo {
            id: s.next_id,
            owner: owner.to_string(),
            name: name.to_string(),
            clone_url: format!("https://github.com/{full_name}.git"),
            default_branch: "main".into(),
            private: true,
            git_dir: None,
            branches: BTreeMap::from([("main".to_string(), "0".repeat(40))]),
            permissions: HashMap::new(),
            next_number: 1,
        };
        s.repos.insert(repo_key(owner, name), repo);
    }

    /// A repository whose `clone_url` is this local git repository (bare or
    /// not): its branches and default branch are read from it, and deleting
    /// a branch deletes it there.
    pub fn add_repo_at(&self, full_name: &str, git_dir: &Path) {
        self.add_repo(full_name);
        let head =
            git(git_dir, &["symbolic-ref", "--short", "HEAD"]).unwrap_or_else(|| "main".into());
        self.with_repo(full_name, |r| {
            r.clone_url = git_dir.display().to_string();
            r.default_branch = head;
            r.git_dir = Some(git_dir.to_path_buf());
            r.branches.clear();
        });
    }

    /// A branch of a repository without a git repository.
    pub fn add_branch(&self, full_name: &str, branch: &str, sha: &str) {
        self.with_repo(full_name, |r| {
            r.branches.insert(branch.to_string(), sha.to_string());
        });
    }

    /// The user's permission on the repository: GitHub's word (`admin`,
    /// `maintain`, `write`, `triage`, `read`).
    pub fn grant(&self, full_name: &str, login: &str, permission: &str) {
        self.with_repo(full_name, |r| {
            r.permissions
                .insert(login.to_string(), permission.to_string());
        });
    }

    pub fn set_default_branch(&self, full_name: &str, branch: &str) {
        self.with_repo(full_name, |r| r.default_branch = branch.to_string());
    }

    /// A GitHub App whose JWTs are checked with this RSA public key (PEM).
    pub fn add_app(&self, app_id: u64, slug: &str, public_key_pem: &str) {
        self.state.lock().unwrap().apps.insert(
            app_id,
            App {
                slug: slug.to_string(),
                public_key_pem: public_key_pem.to_string(),
            },
        );
    }

    /// Installs the app on these repositories with these permissions
    /// (`("contents", "write")`, `("pull_requests", "write")`, ...).
    pub fn install(
        &self,
        app_id: u64,
        installation_id: u64,
        repos: &[&str],
        permissions: &[(&str, &str)],
    ) {
        self.state.lock().unwrap().installations.insert(
            installation_id,
            Installation {
                app_id,
                repos: repos.iter().map(|r| r.to_lowercase()).collect(),
                permissions: permissions
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        );
    }

    /// Removes an installation; its tokens stop working (401).
    pub fn uninstall(&self, installation_id: u64) {
        self.state
            .lock()
            .unwrap()
            .installations
            .remove(&installation_id);
    }

    /// How long installation tokens issued from now on live (GitHub: 1 h).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state.lock().unwrap().token_lifetime = lifetime;
    }

    /// Every installation token issued so far expires now (the client still
    /// thinks it valid; its next use gets 401).
    pub fn expire_installation_tokens(&self) {
        let now = SystemTime::now() - Duration::from_secs(1);
        for t in self.state.lock().unwrap().installation_tokens.values_mut() {
            t.expires_at = now;
        }
    }

    /// How many installation tokens were issued.
    pub fn installation_tokens_issued(&self) -> usize {
        self.state.lock().unwrap().installation_tokens.len()
    }

    /// The next `count` requests to `path` (without prefix or query) are
    /// answered 403 "secondary rate limit" with `retry-after: seconds`.
    pub fn secondary_limit(&self, path: &str, count: usize, retry_after: u64) {
        self.state.lock().unwrap().secondary.push(SecondaryLimit {
            path: path.to_string(),
            remaining: count,
            retry_after,
        });
    }

    /// The next `count` requests to `path` are answered with this 5xx
    /// status (a GitHub outage).
    pub fn server_error(&self, path: &str, count: usize, status: u16) {
        self.state.lock().unwrap().server_errors.push(ServerError {
            path: path.to_string(),
            remaining: count,
            status,
        });
    }

    /// The primary rate limit is used up until `reset` (every request is
    /// answered 403 with `x-ratelimit-remaining: 0` and that reset).
    pub fn exhaust_rate_limit(&self, reset: SystemTime) {
        self.state.lock().unwrap().exhausted_until = Some(reset);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests that matched no operation of GitHub's description, broke
    /// it, or asked for something this server does not script.
    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    pub fn assert_no_violations(&self) {
        let v = self.violations();
        assert!(
            v.is_empty(),
            "requests GitHub would refuse:\n{}",
            v.join("\n")
        );
    }

    /// The repository's pulls as GitHub would return them.
    pub fn pulls(&self, full_name: &str) -> Vec<Value> {
        let s = self.state.lock().unwrap();
        let key = full_name.to_lowercase();
        s.pulls
            .iter()
            .filter(|p| p.repo == key)
            .map(|p| routes::pull_json(&s, p))
            .collect()
    }

    /// The bodies of the comments on an issue or pull.
    pub fn comments(&self, full_name: &str, number: u64) -> Vec<String> {
        let key = full_name.to_lowercase();
        self.state
            .lock()
            .unwrap()
            .comments
            .iter()
            .filter(|c| c.repo == key && c.number == number)
            .map(|c| c.body.clone())
            .collect()
    }

    /// Whether the branch exists (in git when the repository has one).
    pub fn has_branch(&self, full_name: &str, branch: &str) -> bool {
        let s = self.state.lock().unwrap();
        let repo = &s.repos[&full_name.to_lowercase()];
        routes::branch_sha(repo, branch).is_some()
    }

    fn with_repo(&self, full_name: &str, change: impl FnOnce(&mut Repo)) {
        let mut s = self.state.lock().unwrap();
        let repo = s
            .repos
            .get_mut(&full_name.to_lowercase())
            .unwrap_or_else(|| panic!("no repository {full_name}: add_repo first"));
        change(repo);
    }
}

/// An RSA key pair for a test GitHub App, made with `openssl` in `dir`: the
/// private key file (PKCS#1 PEM, `BEGIN RSA PRIVATE KEY`, as GitHub hands
/// them out) and the public key PEM for [`GithubApi::add_app`].
pub fn app_key_pair(dir: &Path) -> (PathBuf, String) {
    let private = dir.join("app.private-key.pem");
    let public = dir.join("app.public-key.pem");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "genrsa",
        "-traditional",
        "-out",
        private.to_str().unwrap(),
        "2048",
    ]);
    run(&[
        "rsa",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    (private, std::fs::read_to_string(public).unwrap())
}

/// `git args` in `dir`, its trimmed output on success.
pub(crate) fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
