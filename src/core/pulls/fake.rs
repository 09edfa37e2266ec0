//! `FakeHost`: an in-memory `CodeHost` for tests and benches. One
//! repository whose push URL the test chooses (a local bare repository),
//! pull requests numbered from 1, comments and calls recorded, permissions
//! set per login (unknown logins have none).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::core::codehost::{
    CodeHost, HostError, NewPull, Permission, Pull, PullState, RepoName, Repository, Secret,
};

#[derive(Default)]
pub struct FakeHost {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    repository: Option<Repository>,
    pulls: Vec<(NewPull, Pull)>,
    comments: Vec<(u64, String)>,
    permissions: HashMap<String, Permission>,
    deleted: Vec<String>,
}

impl FakeHost {
    /// A host of `repo`, pushed to at `push_url`, default branch `default_branch`.
    pub fn new(repo: &RepoName, push_url: &str, default_branch: &str) -> FakeHost {
        let host = FakeHost::default();
        host.lock().repository = Some(Repository {
            name: repo.clone(),
            push_url: push_url.to_string(),
            default_branch: default_branch.to_string(),
        });
        host
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn grant(&self, login: &str, permission: Permission) {
        self.lock()
            .permissions
            .insert(login.to_string(), permission);
    }

    /// A pull request someone else opened from `head` onto the default
    /// branch; its number.
    pub fn add_pull(&self, head: &str) -> u64 {
        let mut state = self.lock();
        let number = state.pulls.len() as u64 + 1;
        let base = state
            .repository
            .as_ref()
            .map(|r| r.default_branch.clone())
            .unwrap_or_default();
        let pull = Pull {
            number,
            url: format!("https://github.com/someone/pull/{number}"),
            state: PullState::Open,
            head_ref: head.to_string(),
            head_sha: String::new(),
            base_ref: base.clone(),
        };
        let asked = NewPull {
            head: head.to_string(),
            base,
            ..NewPull::default()
        };
        state.pulls.push((asked, pull));
        number
    }

    /// The pull requests opened, as asked and as answered.
    pub fn pulls(&self) -> Vec<(NewPull, Pull)> {
        self.lock().pulls.clone()
    }

    /// Comments, by pull request number.
    pub fn comments(&self) -> Vec<(u64, String)> {
        self.lock().comments.clone()
    }

    pub fn deleted_branches(&self) -> Vec<String> {
        self.lock().deleted.clone()
    }

    fn check(&self, repo: &RepoName) -> Result<Repository, HostError> {
        match &self.lock().repository {
            Some(r) if r.name == *repo => Ok(r.clone()),
            _ => Err(HostError::NotFound(format!("repository {repo}"))),
        }
    }
}

#[async_trait]
impl CodeHost for FakeHost {
    async fn repository(&self, repo: &RepoName) -> Result<Repository, HostError> {
        self.check(repo)
    }

    async fn push_token(&self, repo: &RepoName) -> Result<Secret, HostError> {
        self.check(repo)?;
        Ok(Secret::new("fake-token"))
    }

    async fn open_pull(&self, repo: &RepoName, pull: &NewPull) -> Result<Pull, HostError> {
        self.check(repo)?;
        let mut state = self.lock();
        if state
            .pulls
            .iter()
            .any(|(p, open)| p.head == pull.head && open.state == PullState::Open)
        {
            return Err(HostError::Invalid(format!(
                "a pull request for branch {} already exists",
                pull.head
            )));
        }
        let number = state.pulls.len() as u64 + 1;
        let opened = Pull {
            number,
            url: format!("https://github.com/{repo}/pull/{number}"),
            state: PullState::Open,
            head_ref: pull.head.clone(),
            head_sha: String::new(),
            base_ref: pull.base.clone(),
        };
        state.pulls.push((pull.clone(), opened.clone()));
        Ok(opened)
    }

    async fn pull(&self, repo: &RepoName, number: u64) -> Result<Pull, HostError> {
        self.check(repo)?;
        self.lock()
            .pulls
            .iter()
            .find(|(_, p)| p.number == number)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| HostError::NotFound(format!("pull request #{number}")))
    }

    async fn comment(&self, repo: &RepoName, number: u64, body: &str) -> Result<(), HostError> {
        self.check(repo)?;
        self.lock().comments.push((number, body.to_string()));
        Ok(())
    }

    async fn permission(&self, repo: &RepoName, login: &str) -> Result<Permission, HostError> {
        self.check(repo)?;
        Ok(self
            .lock()
            .permissions
            .get(login)
            .copied()
            .unwrap_or(Permission::None))
    }

    async fn delete_branch(&self, repo: &RepoName, branch: &str) -> Result<(), HostError> {
        self.check(repo)?;
        self.lock().deleted.push(branch.to_string());
        Ok(())
    }
}
