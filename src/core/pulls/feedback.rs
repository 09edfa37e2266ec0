//! A pull request's events (read from GitHub's webhooks by `http::github`,
//! provider-neutral here) and what each does to its task, decided here:
//! - merged: COMPLETED; closed unmerged: CANCELLED (the branch deleted on
//!   GitHub when `delete_branch`);
//! - a review requesting changes, a review comment, a comment mentioning
//!   the handle, from a user with write access: the task's agent session
//!   resumes with that feedback (READY → QUEUED); a failing check suite on
//!   the head claudomator pushed: resumes with what failed;
//! - past `max_resumes` automatic resumes on one pull request: the task
//!   asks a person instead (READY → BLOCKED; answering resumes it);
//! - a delivery handled before, a pull request claudomator did not open,
//!   an event about an older head, a sender without write access: ignored,
//!   with the reason.

use tracing::{info, warn};

use super::{Pulls, host_error};
use crate::core::codehost::PullState;
use crate::core::error::CoreResult;
use crate::core::model::{Question, Task, TaskState, now_millis};

/// What happened on a pull request, as the core needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct PullEvent {
    /// `X-GitHub-Delivery`: the same id twice is one event.
    pub delivery: String,
    /// `owner/name` as the payload has it.
    pub repository: String,
    pub number: u64,
    /// The pull request's head the event is about; empty when the event
    /// does not say (an issue comment).
    pub head_sha: String,
    /// Who did it (a login).
    pub sender: String,
    /// The sender is an app or bot account (GitHub's `sender.type` `Bot`):
    /// its words are never feedback, so claudomator's own replies (and
    /// other bots') cannot send the work back.
    pub sender_is_bot: bool,
    pub kind: PullEventKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PullEventKind {
    Closed {
        merged: bool,
    },
    /// New commits on the branch (`synchronize`): the new head.
    Pushed,
    /// A submitted review; only `changes_requested` sends the work back.
    Review {
        state: String,
        body: String,
    },
    /// A comment on a line of the diff.
    ReviewComment {
        body: String,
        path: String,
        line: Option<u64>,
    },
    /// A comment on the conversation.
    Comment {
        body: String,
    },
    /// A check suite on the head failed.
    ChecksFailed {
        name: String,
        conclusion: String,
        url: String,
    },
}

/// What an event did.
#[derive(Clone, Debug, PartialEq)]
pub enum PullOutcome {
    Resumed(Task),
    /// The automatic resumes ran out: the task asks a person.
    Asked(Task),
    Completed(Task),
    Cancelled(Task),
    /// The new head was recorded.
    Recorded,
    Ignored(String),
}

impl Pulls {
    /// Acts on one pull request event (see the module's list).
    pub async fn handle(&self, event: PullEvent) -> CoreResult<PullOutcome> {
        let outcome = self.decide(&event).await?;
        match &outcome {
            PullOutcome::Ignored(why) => {
                info!(repository = %event.repository, number = event.number, delivery = %event.delivery, sender = %event.sender, reason = %why, "pull request event ignored");
            }
            other => {
                info!(repository = %event.repository, number = event.number, delivery = %event.delivery, outcome = ?std::mem::discriminant(other), "pull request event");
            }
        }
        Ok(outcome)
    }

    async fn decide(&self, event: &PullEvent) -> CoreResult<PullOutcome> {
        let store = self.tasks().store();
        let Some((_, project)) = self.project_of_repository(&event.repository) else {
            return Ok(ignored(format!(
                "repository `{}` is not a project with pull requests",
                event.repository
            )));
        };
        let Some(record) = store
            .find_pull(&project.repo.to_string(), event.number)
            .await?
        else {
            return Ok(ignored(format!(
                "pull request #{} of {} was not opened by claudomator",
                event.number, event.repository
            )));
        };
        if !event.delivery.is_empty()
            && !store.first_delivery(&event.delivery, now_millis()).await?
        {
            return Ok(ignored(format!(
                "delivery {} was handled before",
                event.delivery
            )));
        }
        let task = self.tasks().get(&record.task_id.to_string()).await?;
        if record.state != PullState::Open {
            return Ok(ignored(format!(
                "pull request #{} is {}",
                record.number,
                record.state.as_str()
            )));
        }
        match &event.kind {
            PullEventKind::Closed { merged } => return self.closed(&task, &record, *merged).await,
            PullEventKind::Pushed => {
                store
                    .update_pull(task.id, None, Some(&event.head_sha))
                    .await?;
                return Ok(PullOutcome::Recorded);
            }
            _ => {}
        }
        if !event.head_sha.is_empty() && event.head_sha != record.head_sha {
            return Ok(ignored(format!(
                "the event is about commit {}, not the pull request's head {}: stale",
                event.head_sha, record.head_sha
            )));
        }
        let feedback = match &event.kind {
            PullEventKind::Review { state, body } => {
                if state != "changes_requested" {
                    return Ok(ignored(format!(
                        "a review that is `{state}`: only requested changes send the work back"
                    )));
                }
                format!(
                    "@{} requested changes on pull request #{}:\n\n{}",
                    event.sender,
                    record.number,
                    body.trim()
                )
            }
            PullEventKind::ReviewComment { body, path, line } => {
                let at = line.map(|l| format!(":{l}")).unwrap_or_default();
                format!(
                    "@{} commented on {path}{at} in pull request #{}:\n\n{}",
                    event.sender,
                    record.number,
                    body.trim()
                )
            }
            PullEventKind::Comment { body } => {
                let mention = self.settings().mention.trim();
                if !body.to_lowercase().contains(&mention.to_lowercase()) {
                    return Ok(ignored(format!("the comment does not mention {mention}")));
                }
                format!(
                    "@{} commented on pull request #{}:\n\n{}",
                    event.sender,
                    record.number,
                    body.trim()
                )
            }
            PullEventKind::ChecksFailed {
                name,
                conclusion,
                url,
            } => format!(
                "The checks `{name}` on your last push ({}) ended `{conclusion}`. Find out \
                 why and fix it.{}",
                record.head_sha,
                if url.is_empty() {
                    String::new()
                } else {
                    format!(" Details: {url}")
                }
            ),
            PullEventKind::Closed { .. } | PullEventKind::Pushed => unreachable!("handled above"),
        };
        if !matches!(event.kind, PullEventKind::ChecksFailed { .. }) {
            if event.sender_is_bot {
                return Ok(ignored(format!(
                    "{} is a bot: its comments are not feedback",
                    event.sender
                )));
            }
            let permission = project
                .host
                .permission(&project.repo, &event.sender)
                .await
                .map_err(host_error)?;
            if !permission.can_write() {
                warn!(sender = %event.sender, ?permission, number = record.number, "pull request feedback from a user without write access ignored");
                return Ok(ignored(format!(
                    "{} has no write access to {}: feedback ignored",
                    event.sender, project.repo
                )));
            }
        }
        if task.state != TaskState::Ready {
            return Ok(ignored(format!(
                "task {} is {}, not READY: send the feedback again once its run ends",
                task.id,
                task.state.as_str().to_uppercase()
            )));
        }
        let max = self.settings().max_resumes;
        if !store.count_pull_resume(task.id, max).await? {
            let question = Question {
                text: format!(
                    "Pull request #{} sent the work back {max} times without a person in between \
                     ([pull_requests] max_resumes). Should the agent go on with the latest \
                     feedback? Answer with what it should do.",
                    record.number
                ),
                choices: Vec::new(),
                context: feedback,
                asked_at: now_millis(),
            };
            let task = self
                .tasks()
                .ask(
                    task.id,
                    "pull request feedback: automatic resumes ran out",
                    question,
                )
                .await?;
            return Ok(PullOutcome::Asked(task));
        }
        let pulled = self.pull_into_sandbox(&task, project).await;
        let input = format!(
            "Feedback on your pull request. Address it, then commit; your commits go to the \
             same pull request.{pulled}\n\n{feedback}"
        );
        let task = self
            .tasks()
            .send_back(task.id, "sent back by pull request feedback", input)
            .await?;
        Ok(PullOutcome::Resumed(task))
    }

    /// Commits people pushed to the pull request's branch, merged into the
    /// task's sandbox (when this server has it) before the agent resumes:
    /// what to tell the agent about them.
    async fn pull_into_sandbox(&self, task: &Task, project: &super::PullProject) -> String {
        let Some(sandboxes) = self.tasks().sandboxes() else {
            return String::new();
        };
        let pulled = async {
            let repository = project.host.repository(&project.repo).await?;
            let token = project.host.push_token(&project.repo).await?;
            Ok::<_, crate::core::codehost::HostError>((repository, token))
        }
        .await;
        let (repository, token) = match pulled {
            Ok(both) => both,
            Err(e) => {
                warn!(task_id = %task.id, error = %e, "cannot fetch the pull request's branch");
                return String::new();
            }
        };
        let id = task.id.to_string();
        match crate::sandbox::pull_into_sandbox(sandboxes, &id, &repository.push_url, Some(&token))
            .await
        {
            Ok(commits) if commits.is_empty() => String::new(),
            Ok(commits) => format!(
                " People pushed {} commit(s) to the branch ({}); they are merged into your \
                 work.",
                commits.len(),
                commits.join(", ")
            ),
            Err(e) => {
                warn!(task_id = %task.id, error = %e, "cannot merge the pull request's commits");
                format!(
                    " Commits people pushed to the branch could not be merged into your work: {e}"
                )
            }
        }
    }

    async fn closed(
        &self,
        task: &Task,
        record: &super::PullRecord,
        merged: bool,
    ) -> CoreResult<PullOutcome> {
        let store = self.tasks().store();
        let state = if merged {
            PullState::Merged
        } else {
            PullState::Closed
        };
        store.update_pull(task.id, Some(state), None).await?;
        if self.settings().delete_branch
            && let Some(project) = self.project(&task.project)
            && let Err(e) = project
                .host
                .delete_branch(&project.repo, &record.head_ref)
                .await
        {
            warn!(task_id = %task.id, error = %e, "cannot delete the pull request's branch");
        }
        if task.state.is_final() {
            return Ok(ignored(format!(
                "task {} is already {}",
                task.id,
                task.state.as_str().to_uppercase()
            )));
        }
        if merged && task.state == TaskState::Ready {
            let done = self
                .tasks()
                .complete(task.id, &format!("pull request #{} merged", record.number))
                .await?;
            return Ok(PullOutcome::Completed(done));
        }
        let reason = if merged {
            format!(
                "pull request #{} merged while the task was {}",
                record.number, task.state
            )
        } else {
            format!("pull request #{} closed without merging", record.number)
        };
        let cancelled = self.tasks().cancel(&task.id.to_string(), &reason).await?;
        Ok(PullOutcome::Cancelled(cancelled))
    }
}

fn ignored(why: String) -> PullOutcome {
    PullOutcome::Ignored(why)
}
