//! A CI triage task (`core::ci`) made for a failing pull request that
//! claudomator did not open: when its run ends, its fix is offered as a
//! pull request onto that pull request's branch, and the failing pull
//! request gets a comment with what the task found and where the fix is.
//! Claudomator's own pull requests never get here: their failures resume
//! their own task instead (`feedback.rs`).

use tracing::info;

use super::{Pulls, body, host_error};
use crate::core::ci::PR_TAG;
use crate::core::codehost::PullState;
use crate::core::error::CoreResult;
use crate::core::model::Task;

/// The branch a fix is offered onto: the failing pull request's.
pub(super) struct Onto {
    pub number: u64,
    pub branch: String,
}

/// The failing pull request a triage task was made for.
pub(super) fn failing_pull(task: &Task) -> Option<u64> {
    task.tags
        .iter()
        .find_map(|t| t.strip_prefix(PR_TAG))
        .and_then(|n| n.parse().ok())
}

impl Pulls {
    /// The triage task `task` for pull request `number` ended: its fix
    /// onto that branch, and a comment there.
    pub(super) async fn offer_fix(&self, task: &Task, number: u64) -> CoreResult<()> {
        let Some(project) = self.project(&task.project) else {
            return Ok(());
        };
        let store = self.tasks().store();
        if store
            .find_pull(&project.repo.to_string(), number)
            .await?
            .is_some()
        {
            // Claudomator's own: its task handles the failure.
            return Ok(());
        }
        let failing = project
            .host
            .pull(&project.repo, number)
            .await
            .map_err(host_error)?;
        if failing.state != PullState::Open {
            info!(task_id = %task.id, number, "the failing pull request is no longer open: no fix offered");
            return Ok(());
        }
        let changed = store
            .latest_execution(task.id)
            .await?
            .is_some_and(|e| !e.commits.is_empty());
        let fix = if changed {
            let onto = Onto {
                number,
                branch: failing.head_ref.clone(),
            };
            Some(self.open_new(task, Some(&onto)).await?)
        } else {
            None
        };
        let comment = body::triage_comment(task, fix.as_ref().map(|f| f.url.as_str()));
        let comment = body::defuse(&comment, &self.settings().mention);
        project
            .host
            .comment(&project.repo, number, &comment)
            .await
            .map_err(host_error)?;
        info!(task_id = %task.id, number, fixed = fix.is_some(), "triage reported on the failing pull request");
        Ok(())
    }
}
