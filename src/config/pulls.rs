//! `[pull_requests]`: how a task's work becomes a pull request and how far
//! the pull request's feedback may run its agent without a person (see
//! `core::pulls`). Whether a project's tasks open one is the project's
//! `pull_requests` key.

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::core::pulls::PullSettings;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PullRequestsConfig {
    /// Open pull requests as drafts.
    pub draft: bool,
    /// Labels added to each pull request.
    pub labels: Vec<String>,
    /// Logins asked to review each pull request.
    pub reviewers: Vec<String>,
    /// Reviews, comments and failed checks that resume the agent by
    /// themselves, per pull request; the next one asks a person.
    pub max_resumes: u32,
    /// A conversation comment is feedback when it mentions this.
    pub mention: String,
    /// Delete the branch on GitHub once the pull request is merged or closed.
    pub delete_branch: bool,
}

impl Default for PullRequestsConfig {
    fn default() -> Self {
        let d = PullSettings::default();
        PullRequestsConfig {
            draft: d.draft,
            labels: d.labels,
            reviewers: d.reviewers,
            max_resumes: d.max_resumes,
            mention: d.mention,
            delete_branch: d.delete_branch,
        }
    }
}

impl PullRequestsConfig {
    pub fn settings(&self) -> PullSettings {
        PullSettings {
            draft: self.draft,
            labels: self.labels.clone(),
            reviewers: self.reviewers.clone(),
            max_resumes: self.max_resumes,
            mention: self.mention.trim().to_string(),
            delete_branch: self.delete_branch,
        }
    }

    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if self.max_resumes > 100 {
            bail!("pull_requests.max_resumes: at most 100");
        }
        if self.mention.trim().is_empty() {
            bail!("pull_requests.mention: must not be empty");
        }
        for (key, names) in [
            ("pull_requests.labels", &self.labels),
            ("pull_requests.reviewers", &self.reviewers),
        ] {
            if names.iter().any(|n| n.trim().is_empty()) {
                bail!("{key}: an empty name");
            }
        }
        Ok(())
    }

    /// The section as `claudomator init` writes it.
    pub(super) fn commented(&self) -> String {
        format!(
            "[pull_requests]\n\
             # A project's tasks open pull requests on its GitHub repository (`github`) when\n\
             # the project says pull_requests = \"on_complete\" or \"on_accept\" (or the task does).\n\
             # Reviews requesting changes, review comments, comments mentioning `mention` (from\n\
             # users with write access) and failed check suites resume the task's agent, at\n\
             # most max_resumes times per pull request; then the task asks a person.\n\
             draft = {}\nlabels = []\nreviewers = []\nmax_resumes = {}\nmention = \"{}\"\n\
             delete_branch = {}\n",
            self.draft, self.max_resumes, self.mention, self.delete_branch
        )
    }
}
