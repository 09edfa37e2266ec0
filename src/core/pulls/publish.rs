//! Publishing a task's work: its branch pushed to the repository (a token
//! through `sandbox::push_branch`) and its pull request opened under the
//! store's claim, or, after a resumed run, the same branch pushed again (a
//! fast-forward) and a reply on the pull request saying what changed.

use tracing::{info, warn};

use super::{PullProject, PullRecord, PullSettings, Pulls, body, host_error, triage};
use crate::core::codehost::{NewPull, PullState};
use crate::core::error::{CoreError, CoreResult};
use crate::core::model::{Execution, Task, now_millis};
use crate::sandbox::push_branch;

/// A claim older than this (its server died opening) may be taken over.
const CLAIM_STALE: std::time::Duration = std::time::Duration::from_secs(300);

impl Pulls {
    /// Pushes the task's branch and opens its pull request, under the
    /// store's claim (so one server does it); onto `onto` (the branch of a
    /// failing pull request) when given, else the default or `base_ref`.
    pub(super) async fn open_new(
        &self,
        task: &Task,
        onto: Option<&triage::Onto>,
    ) -> CoreResult<PullRecord> {
        let project = self.project(&task.project).ok_or_else(|| {
            CoreError::FailedPrecondition(format!(
                "project `{}` has no GitHub repository to open pull requests on (set github = \
                 \"owner/name\" and GitHub credentials)",
                task.project
            ))
        })?;
        let store = self.tasks().store();
        let now = now_millis();
        let branch = format!("claudomator/{}", task.id);
        let claim = PullRecord {
            task_id: task.id,
            repository: project.repo.to_string(),
            number: 0,
            url: String::new(),
            state: PullState::Open,
            head_ref: branch.clone(),
            head_sha: String::new(),
            base_ref: String::new(),
            resumes: 0,
            opened_at: now,
            updated_at: now,
        };
        if !store
            .claim_pull(claim.clone(), now - CLAIM_STALE.as_millis() as i64)
            .await?
        {
            return Err(CoreError::Unavailable(format!(
                "task {}'s pull request is being opened elsewhere; look again shortly",
                task.id
            )));
        }
        match self.push_and_open(task, project, claim, onto).await {
            Ok(record) => {
                store.save_pull(record.clone()).await?;
                info!(task_id = %task.id, url = %record.url, "pull request opened");
                Ok(record)
            }
            Err(e) => {
                if let Err(release) = store.release_pull(task.id).await {
                    warn!(task_id = %task.id, error = %release, "cannot release the pull request claim");
                }
                Err(e)
            }
        }
    }

    async fn push_and_open(
        &self,
        task: &Task,
        project: &PullProject,
        mut record: PullRecord,
        onto: Option<&triage::Onto>,
    ) -> CoreResult<PullRecord> {
        let host = &project.host;
        let repository = host.repository(&project.repo).await.map_err(host_error)?;
        let base = match onto {
            Some(onto) => onto.branch.clone(),
            None if looks_like_branch(&task.base_ref) => task.base_ref.clone(),
            None => repository.default_branch.clone(),
        };
        let store = self.tasks().store();
        let executions = store.list_executions(task.id, None, 500).await?.items;
        refuse_workflow_changes(task, &executions, self.settings())?;
        let token = host.push_token(&project.repo).await.map_err(host_error)?;
        let sha = push_branch(
            &project.path,
            &repository.push_url,
            &record.head_ref,
            Some(&token),
            true,
        )
        .await
        .map_err(|e| no_branch(task, e))?;
        let settings = &self.inner.settings;
        let new = NewPull {
            title: match onto {
                Some(onto) => body::fix_title(task, onto.number),
                None => body::title(task),
            },
            body: match onto {
                Some(onto) => body::fix_body(task, &executions, onto.number),
                None => body::body(task, &executions),
            },
            head: record.head_ref.clone(),
            base: base.clone(),
            draft: settings.draft,
            labels: settings.labels.clone(),
            reviewers: settings.reviewers.clone(),
        };
        let pull = host
            .open_pull(&project.repo, &new)
            .await
            .map_err(host_error)?;
        record.number = pull.number;
        record.url = pull.url;
        record.state = pull.state;
        record.head_sha = sha;
        record.base_ref = base;
        record.updated_at = now_millis();
        Ok(record)
    }

    /// A resumed run finished: its new commits pushed to the same branch
    /// (a fast-forward: commits people pushed are never overwritten) and a
    /// reply on the pull request saying what changed.
    pub(super) async fn update(&self, task: &Task, record: PullRecord) -> CoreResult<PullRecord> {
        if record.state != PullState::Open {
            return Ok(record);
        }
        let Some(project) = self.project(&task.project) else {
            return Ok(record);
        };
        let host = &project.host;
        let repo = &project.repo;
        let repository = host.repository(repo).await.map_err(host_error)?;
        let token = host.push_token(repo).await.map_err(host_error)?;
        let store = self.tasks().store();
        let latest = store.latest_execution(task.id).await?;
        let executions = store.list_executions(task.id, None, 500).await?.items;
        let pushed = match refuse_workflow_changes(task, &executions, self.settings()) {
            Err(refused) => Err(refused),
            Ok(()) => push_branch(
                &project.path,
                &repository.push_url,
                &record.head_ref,
                Some(&token),
                false,
            )
            .await
            .map_err(|e| CoreError::Unavailable(e.to_string())),
        };
        let reply = match &pushed {
            Ok(sha) if *sha == record.head_sha => body::unchanged(task, latest.as_ref()),
            Ok(sha) => body::pushed(task, latest.as_ref(), sha),
            Err(e) => body::push_failed(task, &e.to_string()),
        };
        let reply = body::defuse(&reply, &self.settings().mention);
        host.comment(repo, record.number, &reply)
            .await
            .map_err(host_error)?;
        let sha = pushed?;
        store.update_pull(task.id, None, Some(&sha)).await?;
        info!(task_id = %task.id, number = record.number, sha = %sha, "pull request updated");
        Ok(PullRecord {
            head_sha: sha,
            ..record
        })
    }
}

/// Where a change runs code on GitHub with the repository's secrets: the
/// workflows of a branch in the repository itself run on its pull request.
const WORKFLOW_DIR: &str = ".github/workflows/";

/// Work that changes a workflow is not pushed unless the settings allow it:
/// an agent (or whoever wrote what it read) could otherwise have GitHub run
/// its code with the repository's secrets.
fn refuse_workflow_changes(
    task: &Task,
    executions: &[Execution],
    settings: &PullSettings,
) -> CoreResult<()> {
    if settings.allow_workflow_changes {
        return Ok(());
    }
    let mut paths: Vec<&str> = executions
        .iter()
        .flat_map(|e| e.file_changes.iter())
        .map(|f| f.path.as_str())
        .filter(|path| path.contains(WORKFLOW_DIR))
        .collect();
    if paths.is_empty() {
        return Ok(());
    }
    paths.sort_unstable();
    paths.dedup();
    Err(CoreError::FailedPrecondition(format!(
        "task {id}'s work changes {paths}: GitHub runs a branch's workflows with the \
         repository's secrets, so claudomator does not push them unless [pull_requests] \
         allow_workflow_changes = true; see the work with `claudomator diff {id}`",
        id = task.id,
        paths = paths.join(", ")
    )))
}

/// A `base_ref` a pull request can target: a branch name, not a commit.
fn looks_like_branch(base_ref: &str) -> bool {
    let commit = base_ref.len() >= 7 && base_ref.bytes().all(|b| b.is_ascii_hexdigit());
    let tag = base_ref.starts_with("refs/tags/");
    !(base_ref.is_empty() || commit || tag)
}

fn no_branch(task: &Task, e: crate::sandbox::SandboxError) -> CoreError {
    CoreError::FailedPrecondition(format!(
        "cannot push branch claudomator/{} (did the agent change anything?): {e}",
        task.id
    ))
}
