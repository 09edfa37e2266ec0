//! Elaborate: a one-line request and a project become a full task spec that
//! `SubmitTask` accepts unchanged.
//!
//! The paths, in order: the local model (JSON mode), then the `claude` CLI,
//! then the `gemini` CLI (each asked one question with no tools, in an empty
//! scratch directory, for a bounded time). A path is tried only when the one
//! before failed (absent, unreachable, timed out) or answered something that
//! is not a valid spec. When every path fails the answer is a deterministic
//! template (the request itself plus an acceptance line and the server's
//! defaults): a person asking for a spec gets one they can edit and submit,
//! and the response says which path produced it and why the others did not.
//! The only errors are the caller's (an empty request, an unknown project or
//! agent) and a server shutting down.

mod draft;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::error::{CoreError, CoreResult};
use super::llm::{ChatMessage, ChatModel, ChatRequest, LlmError};
use super::model::{AgentType, Id, TaskSpec};
use super::validate::{TaskRules, resolve_project};
use crate::runners::{AskError, AskRequest, Runner};
use draft::Context;

/// Which path wrote the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElaborateSource {
    LocalModel,
    Claude,
    Gemini,
    Template,
}

/// What a caller asks for.
#[derive(Clone, Debug, Default)]
pub struct ElaborateRequest {
    /// The request, in a line or a few.
    pub text: String,
    /// A configured project; empty: the only one.
    pub project: String,
    /// An agent name the spec must use; empty or `auto`: the path chooses.
    pub agent: String,
}

/// A spec and where it came from.
#[derive(Clone, Debug)]
pub struct Elaboration {
    pub spec: TaskSpec,
    pub source: ElaborateSource,
    /// The model that wrote it, when known (empty for the template or a CLI's
    /// default model).
    pub model: String,
    /// Why earlier paths were passed over, and what was repaired in the
    /// answer that was used.
    pub notes: Vec<String>,
}

/// Limits and defaults, from config.
#[derive(Clone, Debug)]
pub struct ElaborateConfig {
    /// The longest answer the local model may write, in tokens.
    pub max_tokens: u32,
    /// How long each agent CLI may take to answer.
    pub cli_timeout: Duration,
    /// Where the CLIs' scratch directories are made (and removed).
    pub scratch_dir: PathBuf,
    /// The model each agent uses when a task names none.
    pub agent_models: HashMap<AgentType, String>,
    /// Agent CLIs asked at once, over all Elaborate calls (each is a whole
    /// agent process); later calls wait for a turn.
    pub max_cli_at_once: usize,
}

impl ElaborateConfig {
    pub fn new(scratch_dir: PathBuf, agent_models: HashMap<AgentType, String>) -> Self {
        ElaborateConfig {
            max_tokens: 1024,
            cli_timeout: Duration::from_secs(120),
            scratch_dir,
            agent_models,
            max_cli_at_once: 2,
        }
    }
}

/// The agent CLIs asked after the local model, in order.
const CLI_PATHS: [(AgentType, ElaborateSource); 2] = [
    (AgentType::Claude, ElaborateSource::Claude),
    (AgentType::Gemini, ElaborateSource::Gemini),
];

/// Why a path (the local model, an agent CLI) gave no answer; a note says so.
#[derive(Debug, thiserror::Error)]
enum PathError {
    /// No local model endpoint.
    #[error("not configured")]
    NoModel,
    /// This server has no runner for the agent.
    #[error("not configured on this server")]
    NoRunner,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Model(#[from] LlmError),
    #[error(transparent)]
    Ask(#[from] AskError),
    /// The turns for agent CLIs are gone (never: the semaphore is not closed).
    #[error(transparent)]
    NoTurn(#[from] tokio::sync::AcquireError),
    #[error("did not answer within {}", humantime::format_duration(*.0))]
    TimedOut(Duration),
    #[error("cannot create {}: {source}", .dir.display())]
    ScratchDir {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Longest request text, in bytes; the rest of the instructions' limit is
/// left for the acceptance line.
const MAX_TEXT_BYTES: usize = 16 * 1024;

#[derive(Clone)]
pub struct Elaborator {
    inner: Arc<Inner>,
}

struct Inner {
    rules: TaskRules,
    chat: Option<Arc<dyn ChatModel>>,
    runners: Vec<Arc<dyn Runner>>,
    config: ElaborateConfig,
    /// Turns for the agent CLIs (`max_cli_at_once`).
    cli_turns: tokio::sync::Semaphore,
    /// Cancelled when the server stops: CLIs in flight are stopped.
    shutdown: CancellationToken,
}

impl Elaborator {
    pub fn new(
        rules: TaskRules,
        chat: Option<Arc<dyn ChatModel>>,
        runners: Vec<Arc<dyn Runner>>,
        mut config: ElaborateConfig,
        shutdown: CancellationToken,
    ) -> Self {
        if let Some(chat) = &chat {
            config
                .agent_models
                .entry(AgentType::Local)
                .or_insert_with(|| chat.model().to_string());
        }
        Elaborator {
            inner: Arc::new(Inner {
                rules,
                chat,
                runners,
                cli_turns: tokio::sync::Semaphore::new(config.max_cli_at_once.max(1)),
                config,
                shutdown,
            }),
        }
    }

    /// A spec for the request: from the first path that gives a valid one,
    /// else the template.
    pub async fn elaborate(&self, request: ElaborateRequest) -> CoreResult<Elaboration> {
        let checked = self.check(&request)?;
        let ctx = checked.context(&self.inner);
        let text = checked.text.as_str();

        let mut notes = Vec::new();
        match self.ask_local_model(text, &ctx).await {
            Ok(answer) => {
                if let Some(done) = accept(answer, ElaborateSource::LocalModel, &ctx, &mut notes) {
                    return Ok(done);
                }
            }
            Err(why) => notes.push(format!("local model: {why}")),
        }
        for (agent, source) in CLI_PATHS {
            self.check_shutdown()?;
            match self.ask_cli(agent, text, &ctx).await {
                Ok(answer) => {
                    if let Some(done) = accept(answer, source, &ctx, &mut notes) {
                        return Ok(done);
                    }
                }
                Err(why) => notes.push(format!("{agent}: {why}")),
            }
        }
        self.check_shutdown()?;
        let spec = draft::template(text, &ctx).map_err(|e| {
            CoreError::Internal(format!("the elaboration template is invalid: {e}"))
        })?;
        notes.push("no model gave a valid spec: this is the template".into());
        Ok(Elaboration {
            spec,
            source: ElaborateSource::Template,
            model: String::new(),
            notes,
        })
    }

    /// The chat call the local-model path makes for a request (for the
    /// benchmark, which replays it raw).
    pub fn local_model_request(&self, request: &ElaborateRequest) -> CoreResult<ChatRequest> {
        let checked = self.check(request)?;
        Ok(self.chat_request(&checked.text, &checked.context(&self.inner)))
    }

    /// The request's fields checked: what the paths work from.
    fn check(&self, request: &ElaborateRequest) -> CoreResult<Checked> {
        let inner = &self.inner;
        let text = request.text.trim();
        if text.is_empty() {
            return Err(CoreError::invalid(
                "text",
                "must not be empty: say in a line what the task should do",
            ));
        }
        let limit = MAX_TEXT_BYTES.min(inner.rules.max_instructions_bytes.saturating_sub(200));
        if text.len() > limit {
            return Err(CoreError::invalid(
                "text",
                format!("is {} bytes; the limit is {limit} bytes", text.len()),
            ));
        }
        let project = resolve_project("project", &request.project, &inner.rules)?;
        let agent = match request.agent.trim() {
            "" => None,
            name => match name.parse::<AgentType>() {
                Ok(AgentType::Auto) => None,
                Ok(agent) => Some(agent),
                Err(e) => return Err(CoreError::invalid("agent", e)),
            },
        };
        let available = inner
            .runners
            .iter()
            .filter(|r| r.unavailable().is_none())
            .map(|r| r.agent())
            .collect();
        Ok(Checked {
            text: text.to_string(),
            project,
            agent,
            available,
        })
    }

    fn check_shutdown(&self) -> CoreResult<()> {
        if self.inner.shutdown.is_cancelled() {
            return Err(CoreError::Unavailable("the server is shutting down".into()));
        }
        Ok(())
    }

    async fn ask_local_model(&self, text: &str, ctx: &Context<'_>) -> Result<Answer, PathError> {
        let Some(chat) = &self.inner.chat else {
            return Err(PathError::NoModel);
        };
        let request = self.chat_request(text, ctx);
        let reply = tokio::select! {
            reply = chat.chat(request) => reply?,
            _ = self.inner.shutdown.cancelled() => return Err(PathError::ShuttingDown),
        };
        let model = if reply.model.is_empty() {
            chat.model().to_string()
        } else {
            reply.model
        };
        Ok(Answer {
            text: reply.content,
            model,
        })
    }

    /// JSON mode, a bounded answer, temperature 0 (the same request gives
    /// the same answer); the client's per-call timeout ([local_model]
    /// timeout) bounds the call.
    fn chat_request(&self, text: &str, ctx: &Context<'_>) -> ChatRequest {
        let (system, user) = draft::prompt(text, ctx);
        let mut request = ChatRequest::new(
            vec![ChatMessage::system(system), ChatMessage::user(user)],
            self.inner.config.max_tokens,
        );
        request.json = true;
        request.temperature = Some(0.0);
        request
    }

    /// Asks one agent CLI, in a scratch directory of its own that is removed
    /// afterwards.
    async fn ask_cli(
        &self,
        agent: AgentType,
        text: &str,
        ctx: &Context<'_>,
    ) -> Result<Answer, PathError> {
        let inner = &self.inner;
        let Some(runner) = inner.runners.iter().find(|r| r.agent() == agent) else {
            return Err(PathError::NoRunner);
        };
        if let Some(why) = runner.unavailable() {
            return Err(AskError::Unavailable(why).into());
        }
        let _turn = tokio::select! {
            turn = inner.cli_turns.acquire() => turn?,
            _ = inner.shutdown.cancelled() => return Err(PathError::ShuttingDown),
        };
        let workdir = ScratchDir::create(&inner.config.scratch_dir)?;
        let model = inner
            .config
            .agent_models
            .get(&agent)
            .cloned()
            .unwrap_or_default();
        let request = AskRequest {
            prompt: draft::one_prompt(text, ctx),
            model: model.clone(),
            workdir: workdir.0.clone(),
        };
        let cancel = inner.shutdown.child_token();
        let timeout = inner.config.cli_timeout;
        let ask = runner.ask(request, cancel.clone());
        tokio::pin!(ask);
        let answer = tokio::select! {
            answer = &mut ask => answer.map_err(PathError::from),
            _ = tokio::time::sleep(timeout) => {
                cancel.cancel();
                // Wait for the process group to be gone before the scratch
                // directory is removed.
                let _ = ask.await;
                Err(PathError::TimedOut(timeout))
            }
        };
        drop(workdir);
        answer.map(|text| Answer { text, model })
    }
}

/// An empty directory for one CLI call, removed when dropped (also when the
/// caller goes away mid-call).
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create(parent: &std::path::Path) -> Result<Self, PathError> {
        let dir = parent.join(Id::new().to_string());
        match std::fs::create_dir_all(&dir) {
            Ok(()) => Ok(ScratchDir(dir)),
            Err(source) => Err(PathError::ScratchDir { dir, source }),
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "cannot remove an elaboration scratch directory");
        }
    }
}

/// A request whose fields passed the checks.
struct Checked {
    text: String,
    project: String,
    agent: Option<AgentType>,
    /// Agents that can run tasks now.
    available: Vec<AgentType>,
}

impl Checked {
    fn context<'a>(&'a self, inner: &'a Inner) -> Context<'a> {
        Context {
            project: &self.project,
            available: &self.available,
            agent: self.agent,
            models: &inner.config.agent_models,
            rules: &inner.rules,
        }
    }
}

/// A model's raw answer.
struct Answer {
    text: String,
    model: String,
}

/// The elaboration, if the answer is a valid spec; otherwise a note says why.
fn accept(
    answer: Answer,
    source: ElaborateSource,
    ctx: &Context,
    notes: &mut Vec<String>,
) -> Option<Elaboration> {
    let label = source_label(source);
    match draft::spec_from_answer(&answer.text, ctx) {
        Ok((spec, repairs)) => {
            notes.extend(repairs.into_iter().map(|r| format!("{label}: {r}")));
            Some(Elaboration {
                spec,
                source,
                model: answer.model,
                notes: std::mem::take(notes),
            })
        }
        Err(why) => {
            notes.push(format!("{label}: {why}"));
            None
        }
    }
}

fn source_label(source: ElaborateSource) -> &'static str {
    match source {
        ElaborateSource::LocalModel => "local model",
        ElaborateSource::Claude => "claude",
        ElaborateSource::Gemini => "gemini",
        ElaborateSource::Template => "template",
    }
}
