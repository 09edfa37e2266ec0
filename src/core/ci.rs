//! CI triage: a failed CI run becomes one task that asks an agent to
//! reproduce, fix and summarise the failure. Transport-neutral: the GitHub
//! shim (`crate::http`) turns a delivery into a [`CiRun`] and calls
//! [`CiTriage`]; everything it decides is here.
//!
//! - One failure, one task: the task's idempotency key is derived from
//!   (repository, head SHA, workflow), so a replayed delivery, or the same
//!   failure delivered twice, finds the task already made.
//! - At most `max_per_window` triage tasks per (repository, branch,
//!   workflow) in `window`, so a flaky pipeline cannot burn money. The
//!   count and the insert are one step in the store, so a burst of
//!   deliveries, to one server or several, never starts more.
//! - Stale heads: when a newer commit's run of the same workflow on the same
//!   branch fails or passes, an older triage task still waiting to run is
//!   cancelled with that reason.
//!
//! The (repository, branch, workflow) key, the commit and its time ride on
//! the task as tags (`ci-run:…`, `ci-sha:…`, `ci-commit-at:…`), which the
//! store indexes; no table of its own.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::error::{CoreError, CoreResult};
use super::llm::{ChatMessage, ChatModel, ChatRequest};
use super::model::{
    AgentSpec, AgentType, Id, SubmitRequest, Task, TaskSpec, TaskState, UnixMillis, now_millis,
};
use super::tasks::{InsertCap, ListQuery, TaskService};

/// The tag every triage task carries.
pub const CI_TAG: &str = "ci";
const RUN_TAG: &str = "ci-run:";
const SHA_TAG: &str = "ci-sha:";
const COMMIT_AT_TAG: &str = "ci-commit-at:";
/// The pull request whose head failed (the first the run names): a
/// project with pull requests offers the fix as a pull request onto its
/// branch (`core::pulls`).
pub const PR_TAG: &str = "ci-pr:";
/// How much of a check's own report goes into the instructions.
const MAX_DETAILS_CHARS: usize = 4000;
/// How much of the model's plan is kept.
const MAX_PLAN_CHARS: usize = 4000;

/// What a CI run's conclusion means here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conclusion {
    /// `failure`, `timed_out`, `startup_failure`: triage it.
    Failing,
    /// `success`, `neutral`, `skipped`: the commit is fine.
    Passing,
    /// Anything else (`cancelled`, `action_required`, `stale`, none).
    Other,
}

impl Conclusion {
    pub fn of(conclusion: &str) -> Self {
        match conclusion {
            "failure" | "timed_out" | "startup_failure" => Conclusion::Failing,
            "success" | "neutral" | "skipped" => Conclusion::Passing,
            _ => Conclusion::Other,
        }
    }
}

/// A pull request a run belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    pub url: String,
}

/// One completed CI run, as the shim read it from the provider.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CiRun {
    /// `owner/name`.
    pub repository: String,
    /// The configured project the repository maps to.
    pub project: String,
    /// What reported it: "workflow run", "check suite", "check run".
    pub source: String,
    /// The workflow, check suite app or check name: the failure's identity.
    pub workflow: String,
    /// The job (a check run's name), when there is one.
    pub job: String,
    pub branch: String,
    pub head_sha: String,
    /// The commit's message, first line, when the provider sent it.
    pub commit_message: String,
    /// When the commit was made, when the provider sent it.
    pub commit_at: Option<UnixMillis>,
    pub conclusion: String,
    /// Where a person sees the run.
    pub run_url: String,
    pub pull_requests: Vec<PullRequest>,
    /// The check's own report (title, summary), when it has one.
    pub details: String,
    /// The provider's delivery id.
    pub delivery: String,
}

/// How triage tasks are made.
#[derive(Clone, Debug)]
pub struct TriageSettings {
    /// Triage tasks per (repository, branch, workflow) within `window`.
    pub max_per_window: u32,
    pub window: Duration,
    /// The agent triage tasks ask for (`auto`, `claude`…).
    pub agent: AgentType,
    /// How long the local model may take to write a plan.
    pub plan_timeout: Duration,
    pub plan_max_tokens: u32,
}

/// What became of a failing run.
#[derive(Clone, Debug)]
pub enum TriageOutcome {
    /// A new triage task; `cancelled` are the stale ones it replaced.
    Created {
        task: Box<Task>,
        plan_source: String,
        cancelled: Vec<Id>,
    },
    /// This failure already has its task.
    Duplicate { task: Box<Task> },
    /// Too many triage tasks for this workflow on this branch lately.
    Capped { recent: usize, cancelled: Vec<Id> },
}

#[derive(Clone)]
pub struct CiTriage {
    tasks: TaskService,
    model: Option<Arc<dyn ChatModel>>,
    settings: TriageSettings,
}

impl CiTriage {
    pub fn new(
        tasks: TaskService,
        model: Option<Arc<dyn ChatModel>>,
        settings: TriageSettings,
    ) -> Self {
        CiTriage {
            tasks,
            model,
            settings,
        }
    }

    /// The triage task of a failing run: the existing one, a new one, or
    /// none when the cap is reached.
    pub async fn failed(&self, run: &CiRun) -> CoreResult<TriageOutcome> {
        let key = idempotency_key(run);
        if let Some(task) = self
            .tasks
            .store()
            .find_task_by_idempotency_key(&key)
            .await?
        {
            return Ok(TriageOutcome::Duplicate {
                task: Box::new(task),
            });
        }
        let cancelled = self.cancel_stale(run, "failed").await?;
        // A cheap look first, so a burst of deliveries past the cap does
        // not ask the model for plans nobody uses; the submit below counts
        // again, in one step with the insert.
        let recent = self.recent_attempts(run).await?;
        if recent >= self.settings.max_per_window as usize {
            return Ok(self.capped(run, recent, cancelled));
        }
        let (plan, plan_source) = self.plan(run).await;
        let request = SubmitRequest {
            spec: self.spec(run, &plan),
            idempotency_key: key,
            task_id: String::new(),
        };
        let cap = InsertCap {
            tag: run_tag(run),
            since: self.window_start(),
            max: u64::from(self.settings.max_per_window),
        };
        let Some((task, created)) = self.tasks.submit_capped(request, cap).await? else {
            let recent = self.recent_attempts(run).await?;
            return Ok(self.capped(run, recent, cancelled));
        };
        if !created {
            // A concurrent delivery of the same failure won the race.
            return Ok(TriageOutcome::Duplicate {
                task: Box::new(task),
            });
        }
        info!(
            task_id = %task.id,
            repository = %run.repository,
            branch = %run.branch,
            workflow = %run.workflow,
            plan_source,
            "triage task created"
        );
        Ok(TriageOutcome::Created {
            task: Box::new(task),
            plan_source,
            cancelled,
        })
    }

    fn capped(&self, run: &CiRun, recent: usize, cancelled: Vec<Id>) -> TriageOutcome {
        info!(
            repository = %run.repository,
            branch = %run.branch,
            workflow = %run.workflow,
            recent,
            "triage capped"
        );
        TriageOutcome::Capped { recent, cancelled }
    }

    /// Where the cap's window starts now.
    fn window_start(&self) -> UnixMillis {
        now_millis() - self.settings.window.as_millis() as i64
    }

    /// A passing run: older triage tasks of its workflow and branch that
    /// have not started are stale. Returns the ones cancelled.
    pub async fn passed(&self, run: &CiRun) -> CoreResult<Vec<Id>> {
        self.cancel_stale(run, "passed").await
    }

    /// Cancels the waiting triage tasks of this workflow and branch made
    /// for an older commit than `run`'s.
    async fn cancel_stale(&self, run: &CiRun, outcome: &str) -> CoreResult<Vec<Id>> {
        let waiting = self
            .tasks
            .list(ListQuery {
                states: vec![TaskState::Pending, TaskState::Queued],
                tag: run_tag(run),
                page_size: 100,
                ..ListQuery::default()
            })
            .await?;
        let sha = sha_tag(run);
        let mut cancelled = Vec::new();
        for task in waiting.items {
            if task.tags.contains(&sha) {
                continue;
            }
            let theirs = tag_value(&task, COMMIT_AT_TAG).and_then(|v| v.parse::<i64>().ok());
            // Without both commit times, the later delivery is the newer commit.
            let older = match (run.commit_at, theirs) {
                (Some(ours), Some(theirs)) => theirs < ours,
                _ => true,
            };
            if !older {
                continue;
            }
            let reason = format!(
                "stale: a newer commit {} on {} {outcome} {}",
                short_sha(&run.head_sha),
                run.branch,
                run.workflow
            );
            match self.tasks.cancel(&task.id.to_string(), &reason).await {
                // Cancelled by someone else meanwhile (another delivery):
                // theirs to report.
                Ok(done) if done.state_reason != reason => {}
                Ok(_) => cancelled.push(task.id),
                // It started or ended meanwhile: no longer ours to cancel.
                Err(
                    CoreError::IllegalTransition(_)
                    | CoreError::FailedPrecondition(_)
                    | CoreError::WrongState(_),
                ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(cancelled)
    }

    /// Triage tasks of this workflow and branch made within the window,
    /// leaving out cancelled ones (they spent nothing).
    async fn recent_attempts(&self, run: &CiRun) -> CoreResult<usize> {
        let since = self.window_start();
        let page = self
            .tasks
            .list(ListQuery {
                tag: run_tag(run),
                page_size: (self.settings.max_per_window + 50).min(500),
                ..ListQuery::default()
            })
            .await?;
        Ok(page
            .items
            .iter()
            .filter(|t| t.created_at >= since && t.state != TaskState::Cancelled)
            .count())
    }

    /// The local model's plan, or the fixed one; and which it is.
    async fn plan(&self, run: &CiRun) -> (String, String) {
        let Some(model) = &self.model else {
            return (template_plan(run), "template (no local model)".into());
        };
        let mut request = ChatRequest::new(
            vec![
                ChatMessage::system(
                    "You triage failed CI runs for a coding agent that will fix them. \
                     In at most 8 short bullet points, say what to inspect first and the \
                     likely causes. Plain text, no preamble.",
                ),
                ChatMessage::user(describe(run)),
            ],
            self.settings.plan_max_tokens,
        );
        request.timeout = Some(self.settings.plan_timeout);
        request.temperature = Some(0.2);
        // The client keeps its own timeout; this one also bounds its retries.
        let answer = tokio::time::timeout(self.settings.plan_timeout, model.chat(request)).await;
        let why = match answer {
            Ok(Ok(response)) => {
                let plan = response.content.trim();
                if !plan.is_empty() {
                    let name = if response.model.is_empty() {
                        model.model().to_string()
                    } else {
                        response.model
                    };
                    return (
                        truncate(plan, MAX_PLAN_CHARS),
                        format!("local model {name}"),
                    );
                }
                "an empty answer".to_string()
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.settings.plan_timeout),
        };
        warn!(repository = %run.repository, reason = %why, "no triage plan from the local model");
        (
            template_plan(run),
            format!("template (the local model gave {why})"),
        )
    }

    fn spec(&self, run: &CiRun, plan: &str) -> TaskSpec {
        let mut tags = vec![CI_TAG.to_string(), run_tag(run), sha_tag(run)];
        if let Some(at) = run.commit_at {
            tags.push(format!("{COMMIT_AT_TAG}{at}"));
        }
        if let Some(pr) = run.pull_requests.first() {
            tags.push(format!("{PR_TAG}{}", pr.number));
        }
        TaskSpec {
            name: truncate(
                &format!(
                    "CI: {} {} on {} ({})",
                    run.workflow,
                    run.conclusion,
                    run.branch,
                    short_sha(&run.head_sha)
                ),
                200,
            ),
            instructions: instructions(run, plan),
            project: run.project.clone(),
            agent: AgentSpec {
                agent_type: self.settings.agent.as_str().to_string(),
                ..AgentSpec::default()
            },
            tags,
            base_ref: run.head_sha.clone(),
            ..TaskSpec::default()
        }
    }
}

/// The facts of the run, as a person would want them.
fn describe(run: &CiRun) -> String {
    let mut text = format!(
        "Repository: {}\nBranch: {}\nCommit: {}",
        run.repository, run.branch, run.head_sha
    );
    if !run.commit_message.is_empty() {
        text.push_str(&format!(" ({})", run.commit_message));
    }
    text.push_str(&format!("\nWorkflow: {} ({})", run.workflow, run.source));
    if !run.job.is_empty() {
        text.push_str(&format!("\nJob: {}", run.job));
    }
    text.push_str(&format!("\nConclusion: {}", run.conclusion));
    if !run.run_url.is_empty() {
        text.push_str(&format!("\nRun: {}", run.run_url));
    }
    for pr in &run.pull_requests {
        text.push_str(&format!("\nPull request: #{} {}", pr.number, pr.url));
    }
    if !run.details.trim().is_empty() {
        text.push_str(&format!(
            "\n\nWhat the check reported:\n{}",
            truncate(run.details.trim(), MAX_DETAILS_CHARS)
        ));
    }
    text
}

fn instructions(run: &CiRun, plan: &str) -> String {
    format!(
        "A CI run failed. You are on a branch made from the failing commit. Reproduce \
         the failure, fix it, and summarise.\n\n{facts}\n\n## Triage plan\n{plan}\n\n\
         ## What to do\n\
         1. Reproduce: find how CI runs `{workflow}` (e.g. .github/workflows/) and run the \
         failing step here, on this commit.\n\
         2. Fix the cause, not the symptom, with the smallest change that does it. Do not \
         disable or skip the failing check.\n\
         3. Run the failing step again to show it passes, and whatever else your change could break.\n\
         4. Summarise in the `## Summary` section: the cause, the fix, how you checked it. \
         If it cannot be reproduced or fixed here (infrastructure, secrets, a flaky \
         service), say so and why, and change nothing.\n",
        facts = describe(run),
        workflow = run.workflow,
    )
}

/// What the task says when no model wrote a plan.
fn template_plan(run: &CiRun) -> String {
    let log = if run.run_url.is_empty() {
        "the run's log".to_string()
    } else {
        format!("the run's log ({})", run.run_url)
    };
    format!(
        "- Read {log} and find the first failing step and its first error.\n\
         - Reproduce that step locally on commit {sha}.\n\
         - Compare this commit with the last one where `{workflow}` passed: `git log`, `git diff`.\n\
         - Likely causes, in order: a regression in this change; a test that is flaky or \
         depends on order, time or network; a dependency or toolchain that moved (lockfile, \
         versions); the CI environment itself (timeouts, runners, secrets).",
        sha = short_sha(&run.head_sha),
        workflow = run.workflow,
    )
}

/// The failure's identity: one task per (repository, head SHA, workflow).
pub fn idempotency_key(run: &CiRun) -> String {
    format!(
        "ci:{}",
        digest(
            &[&run.repository.to_lowercase(), &run.head_sha, &run.workflow],
            40
        )
    )
}

/// The (repository, branch, workflow) a cap and a stale check are about.
fn run_tag(run: &CiRun) -> String {
    format!(
        "{RUN_TAG}{}",
        digest(
            &[&run.repository.to_lowercase(), &run.branch, &run.workflow],
            16
        )
    )
}

fn sha_tag(run: &CiRun) -> String {
    let sha: String = run.head_sha.chars().take(40).collect();
    format!("{SHA_TAG}{sha}")
}

fn tag_value<'a>(task: &'a Task, prefix: &str) -> Option<&'a str> {
    task.tags.iter().find_map(|t| t.strip_prefix(prefix))
}

/// The first `len` hex digits of SHA-256 over the parts, one per line.
fn digest(parts: &[&str], len: usize) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update(b"\n");
    }
    let mut hex = hex::encode(hasher.finalize());
    hex.truncate(len);
    hex
}

fn short_sha(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// At most `max` characters, marked when cut.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((cut, _)) if text.chars().count() > max => format!("{}…", &text[..cut]),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conclusions_are_classified() {
        for c in ["failure", "timed_out", "startup_failure"] {
            assert_eq!(Conclusion::of(c), Conclusion::Failing, "{c}");
        }
        for c in ["success", "neutral", "skipped"] {
            assert_eq!(Conclusion::of(c), Conclusion::Passing, "{c}");
        }
        for c in ["cancelled", "action_required", "stale", "", "FAILURE"] {
            assert_eq!(Conclusion::of(c), Conclusion::Other, "{c}");
        }
    }

    #[test]
    fn keys_name_the_failure_and_tags_fit() {
        let run = CiRun {
            repository: "Octo-Org/Octo-Repo".into(),
            branch: "main".into(),
            head_sha: "3484a3fb816e0859fd6e1cea078d76385ff50625".into(),
            workflow: "test".into(),
            ..CiRun::default()
        };
        let same = CiRun {
            repository: "octo-org/octo-repo".into(),
            ..run.clone()
        };
        assert_eq!(idempotency_key(&run), idempotency_key(&same));
        let other_sha = CiRun {
            head_sha: "0".repeat(40),
            ..run.clone()
        };
        assert_ne!(idempotency_key(&run), idempotency_key(&other_sha));
        assert_eq!(
            run_tag(&run),
            run_tag(&other_sha),
            "same branch and workflow"
        );
        for tag in [run_tag(&run), sha_tag(&run)] {
            assert!(tag.len() <= 64, "{tag}");
        }
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(truncate("héllo wörld", 3), "hé…");
    }
}
