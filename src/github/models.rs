//! The JSON GitHub sends, as much of it as the client reads (serde ignores
//! the rest), and its translation into core terms.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::core::codehost::{Pull, PullState};

#[derive(Debug, Deserialize)]
pub struct UserJson {
    pub login: String,
}

#[derive(Debug, Deserialize)]
pub struct AppJson {
    pub slug: String,
}

#[derive(Debug, Deserialize)]
pub struct InstallationJson {
    pub id: u64,
    /// Permission name → `read` / `write`.
    #[serde(default)]
    pub permissions: BTreeMap<String, String>,
}

/// `permissions` on a repository, present when a user asks.
#[derive(Debug, Deserialize)]
pub struct RepoPermissionsJson {
    #[serde(default)]
    pub push: bool,
}

#[derive(Debug, Deserialize)]
pub struct RepoJson {
    pub clone_url: String,
    pub default_branch: String,
    #[serde(default)]
    pub permissions: Option<RepoPermissionsJson>,
}

#[derive(Debug, Deserialize)]
pub struct PermissionJson {
    pub permission: String,
    #[serde(default)]
    pub role_name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct BranchRefJson {
    #[serde(rename = "ref")]
    pub name: String,
    pub sha: String,
}

#[derive(Debug, Deserialize)]
pub struct PullJson {
    pub number: u64,
    pub html_url: String,
    pub state: String,
    #[serde(default)]
    pub merged: Option<bool>,
    #[serde(default)]
    pub merged_at: Option<String>,
    pub head: BranchRefJson,
    pub base: BranchRefJson,
}

impl PullJson {
    pub fn into_pull(self) -> Pull {
        let state = if self.merged == Some(true) || self.merged_at.is_some() {
            PullState::Merged
        } else if self.state == "closed" {
            PullState::Closed
        } else {
            PullState::Open
        };
        Pull {
            number: self.number,
            url: self.html_url,
            state,
            head_ref: self.head.name,
            head_sha: self.head.sha,
            base_ref: self.base.name,
        }
    }
}
