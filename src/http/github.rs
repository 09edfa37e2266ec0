//! `POST /webhooks/github`: GitHub deliveries in, triage tasks out.
//!
//! In order, each step answering before the next runs:
//! 1. No secret configured: 403, unless `[github] allow_unsigned` (which the
//!    config only takes on a loopback `http_listen`).
//! 2. A declared `Content-Length` over `max_body_bytes`: 413. With a secret,
//!    a missing or malformed `X-Hub-Signature-256`: 401. Both before a byte
//!    of the body is read, so unsigned bodies cost nothing.
//! 3. The body, up to `max_body_bytes` (413 beyond) and within `[http]
//!    body_timeout` (408 after; 400 if the sender breaks off) and the
//!    bytes all deliveries may hold at once (`[http] max_buffered_bytes`,
//!    503 beyond, so forged bodies cannot fill memory), hashed into
//!    the HMAC as it arrives; then the signature is checked, constant-time:
//!    wrong is 401 and nothing is parsed.
//! 4. The content type (`application/json`, or form-encoded `payload=`;
//!    else 415), the event header (400 without), the JSON (400 if invalid).
//! 5. `ping`: 200. `workflow_run`, `check_suite`, `check_run` completed with
//!    a failing conclusion: one triage task (201, or 200 naming the task this
//!    failure already has, or saying the cap is reached). Passing: stale
//!    triage tasks are cancelled. Everything else: 200, ignored, saying why.
//!    A repository no project maps to: 200, ignored, logged.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::StreamExt;
use tracing::{debug, info, warn};

use super::Reply;
use crate::config::Config;
use crate::core::ci::{CiRun, CiTriage, Conclusion, PullRequest, TriageOutcome};
use crate::core::model::UnixMillis;
use crate::core::pulls::{PullEvent, PullEventKind, PullOutcome, Pulls};

mod pulls;

pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
pub const EVENT_HEADER: &str = "x-github-event";
pub const DELIVERY_HEADER: &str = "x-github-delivery";

/// The webhook's settings and the core service it calls.
pub struct GithubHook {
    secret: Option<Vec<u8>>,
    allow_unsigned: bool,
    max_body_bytes: usize,
    body_timeout: Duration,
    /// Body bytes held at once over every delivery (`[http]
    /// max_buffered_bytes`): a permit per byte.
    buffered: Arc<Semaphore>,
    /// `owner/name`, lower-cased, to project name.
    projects: Vec<(String, String)>,
    /// App slugs and names (lower-cased) whose checks are not triaged.
    ignore_check_apps: Vec<String>,
    triage: CiTriage,
    /// Pull requests' feedback, when some project opens them.
    pulls: Option<Pulls>,
}

impl GithubHook {
    /// Pull request events go to `pulls`.
    pub fn with_pulls(mut self, pulls: Option<Pulls>) -> Self {
        self.pulls = pulls;
        self
    }

    /// From the validated config.
    pub fn new(config: &Config, triage: CiTriage) -> Self {
        let github = &config.github;
        GithubHook {
            secret: github.secret().map(|s| s.as_bytes().to_vec()),
            allow_unsigned: github.allow_unsigned,
            max_body_bytes: github.max_body_bytes,
            body_timeout: config.http.limits().body_timeout,
            buffered: Arc::new(Semaphore::new(config.http.max_buffered_bytes)),
            projects: config
                .projects
                .iter()
                .filter_map(|p| Some((repository_name(p.github.as_deref()?)?, p.name.clone())))
                .collect(),
            ignore_check_apps: github
                .ignore_check_apps
                .iter()
                .map(|a| a.trim().to_lowercase())
                .collect(),
            triage,
            pulls: None,
        }
    }

    fn project_of(&self, repository: &str) -> Option<&str> {
        let wanted = repository.to_lowercase();
        self.projects
            .iter()
            .find(|(repo, _)| *repo == wanted)
            .map(|(_, project)| project.as_str())
    }
}

/// The handler.
pub async fn receive(State(hook): State<Arc<GithubHook>>, headers: HeaderMap, body: Body) -> Reply {
    let delivery = header_text(&headers, DELIVERY_HEADER).to_string();
    let reply = handle(&hook, &headers, &delivery, body).await;
    let event = header_text(&headers, EVENT_HEADER);
    if reply.status.is_success() {
        info!(event, delivery, outcome = reply.outcome, message = %reply.message, "github delivery");
    } else {
        warn!(event, delivery, status = reply.status.as_u16(), message = %reply.message, "github delivery refused");
    }
    reply
}

async fn handle(hook: &GithubHook, headers: &HeaderMap, delivery: &str, body: Body) -> Reply {
    if hook.secret.is_none() && !hook.allow_unsigned {
        return Reply::error(
            StatusCode::FORBIDDEN,
            "no webhook secret is configured: set [github] webhook_secret or \
             CLAUDOMATOR_GITHUB_WEBHOOK_SECRET (or allow_unsigned = true for local use)",
        );
    }
    let declared = header_text(headers, header::CONTENT_LENGTH.as_str())
        .parse::<u64>()
        .ok();
    if declared.is_some_and(|n| n > hook.max_body_bytes as u64) {
        return too_large(hook.max_body_bytes);
    }
    // The signature's form is checked before the body is read, so an
    // unsigned sender gets its answer without the server buffering a byte.
    let mut verifier = match &hook.secret {
        Some(secret) => match Verifier::new(secret, headers) {
            Ok(verifier) => Some(verifier),
            Err(reply) => return reply,
        },
        None => None,
    };
    // `_held` keeps the body's share of the budget until the reply.
    let (body, _held) = match read_body(hook, body, &mut verifier).await {
        Ok(read) => read,
        Err(reply) => return reply,
    };
    if let Some(verifier) = verifier
        && !verifier.matches()
    {
        return Reply::error(
            StatusCode::UNAUTHORIZED,
            "X-Hub-Signature-256 does not match the body: wrong secret, or the body was changed",
        );
    }
    let content_type = header_text(headers, header::CONTENT_TYPE.as_str());
    let event = header_text(headers, EVENT_HEADER);
    let delivered = match read_delivery(event, content_type, &body, &hook.ignore_check_apps) {
        Ok(delivered) => delivered,
        Err(reply) => return reply,
    };
    match delivered {
        Delivery::Ping(zen) => Reply::new(StatusCode::OK, "pong", format!("pong: {zen}")),
        Delivery::Ignored(why) => Reply::new(StatusCode::OK, "ignored", why),
        Delivery::Pull(mut event) => {
            event.delivery = delivery.to_string();
            let Some(pulls) = &hook.pulls else {
                return Reply::new(
                    StatusCode::OK,
                    "ignored",
                    "no project opens pull requests here: pull request events are not acted on",
                );
            };
            pull_event(pulls, *event).await
        }
        Delivery::Run {
            mut run,
            conclusion,
        } => {
            // A failure on the head of a pull request claudomator opened
            // resumes its task rather than making a triage task.
            if conclusion == Conclusion::Failing
                && let Some(pulls) = &hook.pulls
                && let Some(reply) = checks_failed(pulls, &run, delivery).await
            {
                return reply;
            }
            let Some(project) = hook.project_of(&run.repository) else {
                warn!(repository = %run.repository, delivery, "github delivery for a repository no project maps to");
                return Reply::new(
                    StatusCode::OK,
                    "ignored",
                    format!(
                        "repository `{}` is not a configured project (set github = \"{}\" on a [[projects]] entry)",
                        run.repository, run.repository
                    ),
                );
            };
            run.project = project.to_string();
            run.delivery = delivery.to_string();
            triage(&hook.triage, &run, conclusion).await
        }
    }
}

/// One call into the core for a pull request event.
async fn pull_event(pulls: &Pulls, event: PullEvent) -> Reply {
    let task_reply =
        |outcome: &'static str, task: &crate::core::model::Task, message: String| Reply {
            task_id: Some(task.id.to_string()),
            ..Reply::new(StatusCode::OK, outcome, message)
        };
    match pulls.handle(event).await {
        Ok(PullOutcome::Resumed(task)) => task_reply(
            "resumed",
            &task,
            format!("task {} resumes with the feedback", task.id),
        ),
        Ok(PullOutcome::Asked(task)) => task_reply(
            "blocked",
            &task,
            format!(
                "task {} ran out of automatic resumes and asks a person",
                task.id
            ),
        ),
        Ok(PullOutcome::Completed(task)) => task_reply(
            "completed",
            &task,
            format!("task {} completed: {}", task.id, task.state_reason),
        ),
        Ok(PullOutcome::Cancelled(task)) => task_reply(
            "cancelled",
            &task,
            format!("task {} cancelled: {}", task.id, task.state_reason),
        ),
        Ok(PullOutcome::Recorded) => Reply::new(
            StatusCode::OK,
            "recorded",
            "the pull request's new head is recorded",
        ),
        Ok(PullOutcome::Ignored(why)) => Reply::new(StatusCode::OK, "ignored", why),
        Err(e) => core_error(e),
    }
}

/// A failed run on pull requests: the first that claudomator opened gets
/// it as feedback (None: none of them is claudomator's).
async fn checks_failed(pulls: &Pulls, run: &CiRun, delivery: &str) -> Option<Reply> {
    for pull in &run.pull_requests {
        match pulls.tracks(&run.repository, pull.number).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => return Some(core_error(e)),
        }
        let event = PullEvent {
            delivery: delivery.to_string(),
            repository: run.repository.clone(),
            number: pull.number,
            head_sha: run.head_sha.clone(),
            sender: String::new(),
            sender_is_bot: false,
            kind: PullEventKind::ChecksFailed {
                name: run.workflow.clone(),
                conclusion: run.conclusion.clone(),
                url: run.run_url.clone(),
            },
        };
        return Some(pull_event(pulls, event).await);
    }
    None
}

/// One call into the core for a completed run.
async fn triage(triage: &CiTriage, run: &CiRun, conclusion: Conclusion) -> Reply {
    let ids = |ids: Vec<crate::core::model::Id>| ids.iter().map(|id| id.to_string()).collect();
    match conclusion {
        Conclusion::Passing => match triage.passed(run).await {
            Ok(cancelled) => Reply {
                cancelled: ids(cancelled),
                ..Reply::new(
                    StatusCode::OK,
                    "passed",
                    format!(
                        "{} {} on {}: nothing to triage",
                        run.workflow, run.conclusion, run.branch
                    ),
                )
            },
            Err(e) => core_error(e),
        },
        Conclusion::Failing => match triage.failed(run).await {
            Ok(TriageOutcome::Created {
                task,
                plan_source,
                cancelled,
            }) => Reply {
                task_id: Some(task.id.to_string()),
                cancelled: ids(cancelled),
                ..Reply::new(
                    StatusCode::CREATED,
                    "created",
                    format!("triage task {} created (plan: {plan_source})", task.id),
                )
            },
            Ok(TriageOutcome::Duplicate { task }) => Reply {
                task_id: Some(task.id.to_string()),
                ..Reply::new(
                    StatusCode::OK,
                    "duplicate",
                    format!(
                        "this failure ({} at {}) already has triage task {} ({})",
                        run.workflow, run.head_sha, task.id, task.state
                    ),
                )
            },
            Ok(TriageOutcome::Capped { recent, cancelled }) => Reply {
                cancelled: ids(cancelled),
                ..Reply::new(
                    StatusCode::OK,
                    "capped",
                    format!(
                        "{recent} triage tasks for {} on {} lately, the most [github] max_triage \
                         allows: not triaging this one",
                        run.workflow, run.branch
                    ),
                )
            },
            Err(e) => core_error(e),
        },
        Conclusion::Other => Reply::new(
            StatusCode::OK,
            "ignored",
            match run.conclusion.as_str() {
                "" => "the run has no conclusion: nothing to triage".to_string(),
                other => format!("conclusion `{other}` is neither a failure nor a pass"),
            },
        ),
    }
}

fn core_error(err: crate::core::CoreError) -> Reply {
    let status = StatusCode::from_u16(crate::error::http_status(&err))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Reply::error(status, err.to_string())
}

fn too_large(limit: usize) -> Reply {
    Reply::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than {limit} bytes ([github] max_body_bytes)"),
    )
}

/// The HMAC of a delivery, computed as its body arrives, and the digest its
/// `X-Hub-Signature-256` claims.
struct Verifier {
    mac: Hmac<Sha256>,
    claimed: Vec<u8>,
}

impl Verifier {
    /// 401 when the header is missing or not `sha256=` and 64 hex digits.
    fn new(secret: &[u8], headers: &HeaderMap) -> Result<Self, Reply> {
        let Some(signature) = headers.get(SIGNATURE_HEADER) else {
            return Err(Reply::error(
                StatusCode::UNAUTHORIZED,
                "missing X-Hub-Signature-256: deliveries must be signed with the webhook secret",
            ));
        };
        let claimed = signature
            .to_str()
            .ok()
            .and_then(|s| s.trim().strip_prefix("sha256="))
            .filter(|hex| hex.len() == 64)
            .and_then(|hex| hex::decode(hex).ok());
        let Some(claimed) = claimed else {
            return Err(Reply::error(
                StatusCode::UNAUTHORIZED,
                "X-Hub-Signature-256 is not `sha256=` and 64 hex digits: deliveries must be \
                 signed with the webhook secret",
            ));
        };
        let mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
        Ok(Verifier { mac, claimed })
    }

    /// Constant-time.
    fn matches(self) -> bool {
        self.mac.verify_slice(&self.claimed).is_ok()
    }
}

/// The body, read within `timeout` and up to `limit` bytes, fed to the
/// verifier as it comes: 413 beyond the limit, 408 when it is too slow, 400
/// when it cannot be read.
/// The body, hashed into the verifier as it arrives, within the size and
/// time limits and the shared budget (whose share it returns, to hold while
/// the body is used).
async fn read_body(
    hook: &GithubHook,
    body: Body,
    verifier: &mut Option<Verifier>,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), Reply> {
    let limit = hook.max_body_bytes;
    let read = async {
        let mut stream = body.into_data_stream();
        let mut buffer = Vec::new();
        let mut held: Option<OwnedSemaphorePermit> = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                debug!(error = %e, "cannot read a github delivery");
                Reply::error(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body: {e}"),
                )
            })?;
            if buffer.len() + chunk.len() > limit {
                return Err(too_large(limit));
            }
            // The chunk fits the body's limit, so it fits in a u32.
            let share = hook
                .buffered
                .clone()
                .try_acquire_many_owned(chunk.len() as u32)
                .map_err(|_| {
                    Reply::error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too many webhook bodies are being read at once ([http] \
                         max_buffered_bytes); deliver again later",
                    )
                })?;
            match held.as_mut() {
                Some(held) => held.merge(share),
                None => held = Some(share),
            }
            if let Some(verifier) = verifier.as_mut() {
                verifier.mac.update(&chunk);
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok((Bytes::from(buffer), held))
    };
    match tokio::time::timeout(hook.body_timeout, read).await {
        Ok(read) => read,
        Err(_) => Err(Reply::error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {} ([http] body_timeout)",
                humantime::format_duration(hook.body_timeout)
            ),
        )),
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// What a delivery asks for, once read.
#[derive(Debug, PartialEq)]
pub enum Delivery {
    /// `ping`, with GitHub's zen line.
    Ping(String),
    /// Acknowledged, nothing to do, because of this.
    Ignored(String),
    /// A completed run (its project not yet mapped).
    Run {
        run: Box<CiRun>,
        conclusion: Conclusion,
    },
    /// Something happened on a pull request (`core::pulls` decides whether
    /// it concerns a task).
    Pull(Box<crate::core::pulls::PullEvent>),
}

/// Reads a (verified) delivery: content type, JSON, event. Pure, and never
/// panics, whatever the input; a refusal is the reply to send.
pub fn read_delivery(
    event: &str,
    content_type: &str,
    body: &[u8],
    ignore_check_apps: &[String],
) -> Result<Delivery, Reply> {
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let json = match media_type.as_str() {
        "application/json" => body.to_vec(),
        "application/x-www-form-urlencoded" => form_payload(body).ok_or_else(|| {
            Reply::error(
                StatusCode::BAD_REQUEST,
                "a form-encoded delivery must carry its JSON in a `payload` field",
            )
        })?,
        "" => {
            return Err(Reply::error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "no Content-Type: send application/json (or application/x-www-form-urlencoded with payload=)",
            ));
        }
        other => {
            return Err(Reply::error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported Content-Type `{other}`: send application/json (or \
                     application/x-www-form-urlencoded with payload=)"
                ),
            ));
        }
    };
    if event.is_empty() {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "missing X-GitHub-Event: this endpoint takes GitHub webhook deliveries",
        ));
    }
    let payload: Value = serde_json::from_slice(&json).map_err(|e| {
        Reply::error(
            StatusCode::BAD_REQUEST,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    if !payload.is_object() {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "the body is JSON but not an object",
        ));
    }
    let read = |source: RunSource| read_run(&payload, source, ignore_check_apps);
    match event {
        "ping" => Ok(Delivery::Ping(text(&payload, &["zen"]).to_string())),
        "workflow_run" => read(RunSource::WorkflowRun),
        "check_suite" => read(RunSource::CheckSuite),
        "check_run" => read(RunSource::CheckRun),
        "pull_request"
        | "pull_request_review"
        | "pull_request_review_comment"
        | "issue_comment" => pulls::read_pull_event(event, &payload),
        other => Ok(Delivery::Ignored(format!(
            "event `{other}` is not handled: only workflow_run, check_suite and check_run \
             failures are triaged, and pull request events acted on"
        ))),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum RunSource {
    WorkflowRun,
    CheckSuite,
    CheckRun,
}

fn read_run(
    payload: &Value,
    source: RunSource,
    ignore_check_apps: &[String],
) -> Result<Delivery, Reply> {
    let (key, label) = match source {
        RunSource::WorkflowRun => ("workflow_run", "workflow run"),
        RunSource::CheckSuite => ("check_suite", "check suite"),
        RunSource::CheckRun => ("check_run", "check run"),
    };
    let action = text(payload, &["action"]);
    if action != "completed" {
        return Ok(Delivery::Ignored(format!(
            "{key} action `{action}` is not `completed`"
        )));
    }
    let object = &payload[key];
    if !object.is_object() {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            format!("a {key} event without a `{key}` object"),
        ));
    }
    let repository = repository_of(payload).ok_or_else(|| {
        Reply::error(
            StatusCode::BAD_REQUEST,
            "the delivery names no repository (repository.full_name)",
        )
    })?;
    if source != RunSource::WorkflowRun {
        let app = &object["app"];
        let names = [text(app, &["slug"]), text(app, &["name"])];
        if let Some(name) = names.iter().find(|n| {
            !n.is_empty()
                && ignore_check_apps
                    .iter()
                    .any(|i| *i == n.to_lowercase() || *i == n.to_lowercase().replace(' ', "-"))
        }) {
            return Ok(Delivery::Ignored(format!(
                "checks of `{name}` are not triaged ([github] ignore_check_apps): its failures come as workflow_run"
            )));
        }
    }
    let suite = match source {
        RunSource::CheckRun => &object["check_suite"],
        _ => object,
    };
    let head_sha = text(object, &["head_sha"]);
    if head_sha.is_empty()
        || head_sha.len() > 64
        || !head_sha.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            format!("{key}.head_sha is missing or not a commit id"),
        ));
    }
    let workflow = match source {
        RunSource::WorkflowRun => first_non_empty(&[
            text(object, &["name"]),
            text(payload, &["workflow", "name"]),
            text(object, &["path"]),
        ]),
        RunSource::CheckSuite => first_non_empty(&[
            text(object, &["app", "name"]),
            text(object, &["app", "slug"]),
        ]),
        RunSource::CheckRun => text(object, &["name"]).to_string(),
    };
    let workflow = if workflow.is_empty() {
        label.to_string()
    } else {
        workflow
    };
    let commit = &suite["head_commit"];
    let html_url = text(&payload["repository"], &["html_url"]);
    let run_url = match source {
        RunSource::WorkflowRun => text(object, &["html_url"]).to_string(),
        RunSource::CheckRun => {
            first_non_empty(&[text(object, &["html_url"]), text(object, &["details_url"])])
        }
        RunSource::CheckSuite if !html_url.is_empty() => {
            format!("{html_url}/commit/{head_sha}/checks")
        }
        RunSource::CheckSuite => String::new(),
    };
    let pull_requests = object["pull_requests"]
        .as_array()
        .map(|prs| {
            prs.iter()
                .filter_map(|pr| pr["number"].as_u64())
                .map(|number| PullRequest {
                    number,
                    url: format!("https://github.com/{repository}/pull/{number}"),
                })
                .collect()
        })
        .unwrap_or_default();
    let details = match source {
        RunSource::CheckRun => [
            text(object, &["output", "title"]),
            text(object, &["output", "summary"]),
            text(object, &["output", "text"]),
        ]
        .iter()
        .filter(|t| !t.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("\n\n"),
        _ => String::new(),
    };
    let run = CiRun {
        repository,
        project: String::new(),
        source: match source {
            RunSource::CheckRun => {
                let app = text(object, &["app", "name"]);
                if app.is_empty() {
                    label.to_string()
                } else {
                    format!("{label} of {app}")
                }
            }
            _ => label.to_string(),
        },
        workflow,
        job: match source {
            RunSource::CheckRun => text(object, &["name"]).to_string(),
            _ => String::new(),
        },
        branch: text(suite, &["head_branch"]).to_string(),
        head_sha: head_sha.to_string(),
        commit_message: text(commit, &["message"])
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        commit_at: timestamp(text(commit, &["timestamp"])),
        conclusion: text(object, &["conclusion"]).to_string(),
        run_url,
        pull_requests,
        details,
        delivery: String::new(),
    };
    let conclusion = Conclusion::of(&run.conclusion);
    Ok(Delivery::Run {
        run: Box::new(run),
        conclusion,
    })
}

/// `owner/name` from the payload's repository: `full_name`, else a URL.
fn repository_of(payload: &Value) -> Option<String> {
    let repo = &payload["repository"];
    let full_name = text(repo, &["full_name"]);
    if !full_name.is_empty() {
        return repository_name(full_name);
    }
    ["clone_url", "html_url", "ssh_url"]
        .iter()
        .find_map(|key| repository_name(text(repo, &[key])))
}

/// `owner/name`, lower-cased, from `owner/name` or a GitHub URL
/// (`https://github.com/owner/name(.git)`, `git@github.com:owner/name.git`).
pub fn repository_name(text: &str) -> Option<String> {
    let text = text.trim().trim_end_matches('/');
    let text = text.strip_suffix(".git").unwrap_or(text);
    let path = match text.split_once("://") {
        // scheme://host/owner/name
        Some((_, rest)) => rest.split_once('/')?.1,
        None => match text.split_once(':') {
            // git@host:owner/name
            Some((_, path)) => path,
            None => text,
        },
    };
    let (owner, name) = path.split_once('/')?;
    if owner.is_empty() || name.is_empty() || name.contains('/') {
        return None;
    }
    Some(format!("{owner}/{name}").to_lowercase())
}

/// The string at `path`, or "" when it is absent or not a string.
fn text<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn first_non_empty(texts: &[&str]) -> String {
    texts
        .iter()
        .find(|t| !t.trim().is_empty())
        .map(|t| t.trim().to_string())
        .unwrap_or_default()
}

/// Unix milliseconds of an RFC 3339 time such as `2020-10-05T16:32:07Z`.
fn timestamp(text: &str) -> Option<UnixMillis> {
    let time = humantime::parse_rfc3339_weak(text).ok()?;
    let since = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_millis()).ok()
}

/// The `payload` field of a form-encoded body, decoded.
fn form_payload(body: &[u8]) -> Option<Vec<u8>> {
    body.split(|b| *b == b'&').find_map(|pair| {
        let value = pair.strip_prefix(b"payload=")?;
        percent_decode(value)
    })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn percent_decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_are_read_from_names_and_urls() {
        for (text, expected) in [
            ("Octo-Org/Octo-Repo", Some("octo-org/octo-repo")),
            (
                "https://github.com/octo-org/octo-repo.git",
                Some("octo-org/octo-repo"),
            ),
            (
                "https://github.com/octo-org/octo-repo/",
                Some("octo-org/octo-repo"),
            ),
            (
                "git@github.com:octo-org/octo-repo.git",
                Some("octo-org/octo-repo"),
            ),
            ("octo-repo", None),
            ("a/b/c", None),
            ("", None),
        ] {
            assert_eq!(repository_name(text).as_deref(), expected, "{text}");
        }
    }

    #[test]
    fn form_bodies_carry_the_payload() {
        assert_eq!(
            form_payload(b"a=1&payload=%7B%22zen%22%3A+%22x%22%7D").unwrap(),
            br#"{"zen": "x"}"#
        );
        assert_eq!(form_payload(b"payload=%zz"), None);
        assert_eq!(form_payload(b"other=1"), None);
    }

    #[test]
    fn times_are_read() {
        assert_eq!(timestamp("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(timestamp("yesterday"), None);
    }

    proptest::proptest! {
        /// Whatever arrives, reading it answers; it never panics.
        #[test]
        fn reading_never_panics(
            event in "(ping|workflow_run|check_suite|check_run|push|)",
            content_type in "(application/json|application/x-www-form-urlencoded|text/plain|)",
            body: Vec<u8>,
        ) {
            let _ = read_delivery(&event, &content_type, &body, &["github-actions".into()]);
        }

        /// JSON shaped like a delivery, with any values, is read without panics.
        #[test]
        fn odd_deliveries_never_panic(
            event in "(workflow_run|check_suite|check_run)",
            action in "(completed|requested|)",
            conclusion in "(failure|success|timed_out|[a-z]{0,8})",
            sha in "[0-9a-fA-Fxz]{0,70}",
            branch in ".{0,20}",
            name in ".{0,20}",
            full_name in ".{0,30}",
            numbers in proptest::collection::vec(proptest::prelude::any::<i64>(), 0..3),
        ) {
            let object = serde_json::json!({
                "head_sha": sha, "head_branch": branch, "conclusion": conclusion,
                "name": name, "pull_requests": numbers.iter().map(|n| serde_json::json!({"number": n})).collect::<Vec<_>>(),
                "check_suite": {"head_branch": branch, "head_commit": {"timestamp": name}},
                "app": {"name": name}, "head_commit": {"message": name, "timestamp": branch},
            });
            let mut body = serde_json::json!({
                "action": action,
                "repository": {"full_name": full_name},
            });
            body[&event] = object;
            let _ = read_delivery(&event, "application/json", body.to_string().as_bytes(), &[]);
        }
    }
}
