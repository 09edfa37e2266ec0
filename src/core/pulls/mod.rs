//! Pull requests: a task's branch turned into a pull request on the
//! project's GitHub repository, and the pull request's feedback turned back
//! into the task's agent session. `Pulls` owns when that happens; the code
//! host (`core::codehost::CodeHost`) does the talking, git (`sandbox::
//! push_branch`) the pushing.
//!
//! - `mod.rs` (this file): `Pulls`, its settings, the change-bus listener
//!   that opens or updates a pull request when a PR-enabled task reaches
//!   READY (`on_complete`, or any task that already has one: a resumed run
//!   finished), `accept` for `on_accept`, `open` for `claudomator pr`.
//! - `record.rs`: `PullRecord`, what the store keeps.
//! - `publish.rs`: the branch pushed and the pull request opened (under
//!   the store's claim), or pushed again and replied on after a resume.
//! - `body.rs`: the pull request's title and body, and the replies.
//! - `feedback.rs`: `PullEvent` (a webhook event in core terms) → resume,
//!   question, complete, cancel or ignore, with why.
//! - `triage.rs`: a CI triage task for someone else's failing pull request
//!   offers its fix as a pull request onto that branch and says what it
//!   found there.
//! - `fake.rs`: `FakeHost`, an in-memory `CodeHost` for tests.
//!
//! In a cluster every server sees every change; only the server that ran
//! the task's latest execution (it has the sandbox) acts on one, and the
//! opening itself is claimed in the store first, so exactly one server
//! opens a task's pull request whoever asks.

mod body;
pub mod fake;
mod feedback;
mod publish;
mod record;
mod triage;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::warn;

pub use feedback::{PullEvent, PullEventKind, PullOutcome};
pub use record::PullRecord;

use super::bus::BusError;
use super::codehost::{CodeHost, HostError, RepoName};
use super::error::{CoreError, CoreResult};
use super::model::{Id, PullMode, Task, TaskState};
use super::tasks::TaskService;

/// `[pull_requests]` (read and checked by `config::pulls`): how pull
/// requests are opened and how far their feedback may run the agent
/// without a person.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PullSettings {
    /// Open pull requests as drafts.
    pub draft: bool,
    /// Labels added to each pull request.
    pub labels: Vec<String>,
    /// Logins asked to review each pull request.
    pub reviewers: Vec<String>,
    /// Automatic resumes per pull request before the task asks a person.
    pub max_resumes: u32,
    /// A comment must mention this (case-insensitive) to be feedback.
    pub mention: String,
    /// Delete the branch on GitHub once the pull request is merged or closed.
    pub delete_branch: bool,
    /// Push work that changes `.github/workflows/` (GitHub runs a branch's
    /// workflows with the repository's secrets); off, such work is kept
    /// here and the pull request is not opened or updated.
    pub allow_workflow_changes: bool,
}

impl Default for PullSettings {
    fn default() -> Self {
        PullSettings {
            draft: false,
            labels: Vec::new(),
            reviewers: Vec::new(),
            max_resumes: 3,
            mention: "@claudomator".into(),
            delete_branch: false,
            allow_workflow_changes: false,
        }
    }
}

/// A project whose tasks may open pull requests.
#[derive(Clone)]
pub struct PullProject {
    /// The project's repository (where task branches are delivered).
    pub path: PathBuf,
    pub repo: RepoName,
    pub host: Arc<dyn CodeHost>,
}

#[derive(Clone)]
pub struct Pulls {
    inner: Arc<Inner>,
}

struct Inner {
    tasks: TaskService,
    settings: PullSettings,
    /// By project name.
    projects: HashMap<String, PullProject>,
    server_id: String,
}

impl Pulls {
    pub fn new(
        tasks: TaskService,
        settings: PullSettings,
        projects: HashMap<String, PullProject>,
        server_id: String,
    ) -> Pulls {
        Pulls {
            inner: Arc::new(Inner {
                tasks,
                settings,
                projects,
                server_id,
            }),
        }
    }

    pub fn settings(&self) -> &PullSettings {
        &self.inner.settings
    }

    fn tasks(&self) -> &TaskService {
        &self.inner.tasks
    }

    /// The project named `name`, if it can open pull requests.
    fn project(&self, name: &str) -> Option<&PullProject> {
        self.inner.projects.get(name)
    }

    /// The project that mirrors `repository` (`owner/name`, any case).
    pub fn project_of_repository(&self, repository: &str) -> Option<(&str, &PullProject)> {
        let wanted = repository.to_lowercase();
        self.inner
            .projects
            .iter()
            .find(|(_, p)| p.repo.to_string().to_lowercase() == wanted)
            .map(|(name, p)| (name.as_str(), p))
    }

    /// Whether pull request `number` of `repository` is one a task opened.
    pub async fn tracks(&self, repository: &str, number: u64) -> CoreResult<bool> {
        let Some((_, project)) = self.project_of_repository(repository) else {
            return Ok(false);
        };
        let store = self.tasks().store();
        Ok(store
            .find_pull(&project.repo.to_string(), number)
            .await?
            .is_some())
    }

    /// Listens to the change bus from `cursor` until `shutdown`: a task
    /// whose run just ended in READY gets its pull request opened
    /// (`on_complete`) or updated (it has one); a triage task for a failing
    /// pull request (READY or COMPLETED) offers its fix. One change at a
    /// time, in order.
    pub fn start(&self, cursor: u64, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let pulls = self.clone();
        tokio::spawn(async move {
            let bus = pulls.tasks().bus().clone();
            let mut cursor = cursor;
            loop {
                let mut subscription = match bus.subscribe(cursor).await {
                    Ok(s) => s,
                    Err(BusError::Closed) => return,
                    Err(e) => {
                        warn!(error = %e, "pull requests: cannot follow the change bus; starting from now");
                        cursor = bus.head();
                        // A store that keeps failing is not asked in a loop.
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        continue;
                    }
                };
                loop {
                    let next = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        next = subscription.next() => next,
                    };
                    let published = match next {
                        Ok(p) => p,
                        Err(BusError::Closed) => return,
                        Err(e) => {
                            warn!(error = %e, "pull requests: lost the change bus; following from now");
                            cursor = bus.head();
                            break;
                        }
                    };
                    let change = &published.change;
                    let Some(task) = &published.task else {
                        continue;
                    };
                    let ended = matches!(change.to, TaskState::Ready | TaskState::Completed);
                    if change.from != Some(TaskState::Running) || !ended {
                        continue;
                    }
                    pulls.after_run(task).await;
                }
            }
        })
    }

    /// A run of `task` ended in READY: open its pull request, or push to
    /// the one it has and reply there. Only the server that ran it acts.
    async fn after_run(&self, task: &Task) {
        // Whatever its setting: a task may have a pull request opened by
        // `claudomator pr`, or be a triage task for a failing one.
        let failing_pull = triage::failing_pull(task);
        if self.project(&task.project).is_none() {
            return;
        }
        let store = self.tasks().store();
        let ran_here = match store.latest_execution(task.id).await {
            Ok(Some(last)) => last.server_id.is_empty() || last.server_id == self.inner.server_id,
            Ok(None) => false,
            Err(e) => {
                warn!(task_id = %task.id, error = %e, "pull requests: cannot read the latest execution");
                false
            }
        };
        if !ran_here {
            return;
        }
        let existing = match store.get_pull(task.id).await {
            Ok(existing) => existing,
            Err(e) => {
                warn!(task_id = %task.id, error = %e, "pull requests: cannot read the task's pull request");
                return;
            }
        };
        let result = match existing {
            Some(record) if !record.is_opening() && task.state == TaskState::Ready => {
                self.update(task, record).await.map(|_| ())
            }
            Some(_) => return,
            None if let Some(number) = failing_pull => self.offer_fix(task, number).await,
            None if task.state != TaskState::Ready => return,
            None if task.pull_requests == PullMode::OnComplete => {
                self.open_new(task, None).await.map(|_| ())
            }
            None => return,
        };
        if let Err(e) = result {
            warn!(task_id = %task.id, error = %e, "pull requests: cannot publish the task's work");
        }
    }

    /// The task's pull request, if it has one.
    pub async fn get(&self, task_id: Id) -> CoreResult<Option<PullRecord>> {
        Ok(self.tasks().store().get_pull(task_id).await?)
    }

    /// Accepting a task: an `on_accept` task without a pull request gets
    /// one, and stays READY until it is merged (or closed); any other task
    /// is accepted as usual.
    pub async fn accept(&self, task_id: &str) -> CoreResult<Task> {
        let task = self.tasks().get(task_id).await?;
        let opens = task.pull_requests == PullMode::OnAccept
            && task.state == TaskState::Ready
            && self.get(task.id).await?.is_none();
        if !opens {
            return self.tasks().accept(task_id).await;
        }
        self.open_new(&task, None).await?;
        self.tasks().get(task_id).await
    }

    /// `claudomator pr`: the task's pull request, opened now if a READY or
    /// COMPLETED task has none (whatever its `pull_requests` setting).
    /// True when it was opened now.
    pub async fn open(&self, task_id: &str) -> CoreResult<(PullRecord, bool)> {
        let task = self.tasks().get(task_id).await?;
        if let Some(record) = self.get(task.id).await?
            && !record.is_opening()
        {
            return Ok((record, false));
        }
        if !matches!(task.state, TaskState::Ready | TaskState::Completed) {
            return Err(CoreError::FailedPrecondition(format!(
                "task {} is {}: a pull request is opened from READY or COMPLETED work",
                task.id,
                task.state.as_str().to_uppercase()
            )));
        }
        Ok((self.open_new(&task, None).await?, true))
    }
}

fn host_error(e: HostError) -> CoreError {
    match e {
        HostError::NotFound(_) | HostError::Invalid(_) => {
            CoreError::FailedPrecondition(e.to_string())
        }
        other => CoreError::Unavailable(other.to_string()),
    }
}

#[cfg(test)]
mod tests;
