//! `[pull_requests]` (`core::pulls::PullSettings`): checked once, and
//! written into the commented default file. Whether a project's tasks open
//! pull requests is the project's `pull_requests` key.

use anyhow::bail;

use crate::core::pulls::PullSettings;

pub(super) fn validate(settings: &PullSettings) -> anyhow::Result<()> {
    if settings.max_resumes > 100 {
        bail!("pull_requests.max_resumes: at most 100");
    }
    if settings.mention.trim().is_empty() {
        bail!("pull_requests.mention: must not be empty");
    }
    for (key, names) in [
        ("pull_requests.labels", &settings.labels),
        ("pull_requests.reviewers", &settings.reviewers),
    ] {
        if names.iter().any(|n| n.trim().is_empty()) {
            bail!("{key}: an empty name");
        }
    }
    Ok(())
}

/// The section as `claudomator init` writes it.
pub(super) fn commented(settings: &PullSettings) -> String {
    format!(
        "[pull_requests]\n\
         # A project's tasks open pull requests on its GitHub repository (`github`) when\n\
         # the project says pull_requests = \"on_complete\" or \"on_accept\" (or the task does).\n\
         # Reviews requesting changes, review comments, comments mentioning `mention` (from\n\
         # users with write access) and failed check suites resume the task's agent, at\n\
         # most max_resumes times per pull request; then the task asks a person.\n\
         # Work that changes .github/workflows/ is not pushed (GitHub runs a branch's\n\
         # workflows with the repository's secrets) unless allow_workflow_changes = true.\n\
         draft = {}\nlabels = []\nreviewers = []\nmax_resumes = {}\nmention = \"{}\"\n\
         delete_branch = {}\nallow_workflow_changes = {}\n",
        settings.draft,
        settings.max_resumes,
        settings.mention,
        settings.delete_branch,
        settings.allow_workflow_changes
    )
}
