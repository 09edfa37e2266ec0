//! The `local` agent: a task answered by the configured OpenAI-compatible
//! model ([`ChatModel`]), streamed into the execution log. No process, no
//! tools: the model only writes text, so the sandbox stays unchanged and
//! the run costs nothing.
//!
//! Text is logged in batches, not one event per token: whatever has
//! arrived is written every [`FLUSH_EVERY`] (cut after its last complete
//! line when it has one), or sooner once [`FLUSH_BYTES`] are waiting. A
//! follower sees the answer within a quarter second, and a fast model
//! makes a few events a second instead of hundreds.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{AgentProbe, RunOutcome, RunRequest, Runner, Verdict, one_line};
use crate::core::llm::{ChatChunk, ChatMessage, ChatModel, ChatRequest, LlmError, TokenUsage};
use crate::core::logs::{LogKind, LogWriter};
use crate::core::model::AgentType;

/// What the model is told: it cannot act, only answer.
pub const LOCAL_SYSTEM_PROMPT: &str = "You are answering a task for claudomator. You cannot \
run commands, call tools or change files: answer in text only. End your answer with a \
`## Summary` section of one or two sentences.";

/// How often streamed text is written to the log.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// Text waiting longer than this is written at once.
pub const FLUSH_BYTES: usize = 1024;

pub struct LocalRunner {
    model: Option<Arc<dyn ChatModel>>,
    max_tokens: u32,
    /// Where the API key comes from, for `doctor`.
    credentials: String,
}

impl LocalRunner {
    /// `model`: None when no endpoint is configured (the runner is then
    /// unavailable). `max_tokens`: the longest answer.
    pub fn new(model: Option<Arc<dyn ChatModel>>, max_tokens: u32, credentials: String) -> Self {
        LocalRunner {
            model,
            max_tokens,
            credentials,
        }
    }
}

const NOT_CONFIGURED: &str =
    "no local model is configured (set [local_model] endpoint or CLAUDOMATOR_LOCAL_MODEL_ENDPOINT)";

#[async_trait::async_trait]
impl Runner for LocalRunner {
    fn agent(&self) -> AgentType {
        AgentType::Local
    }

    fn unavailable(&self) -> Option<String> {
        self.model.is_none().then(|| NOT_CONFIGURED.to_string())
    }

    /// Whether the endpoint answers `GET /models`.
    async fn probe(&self) -> AgentProbe {
        let Some(model) = &self.model else {
            return AgentProbe {
                detail: NOT_CONFIGURED.into(),
                ..AgentProbe::default()
            };
        };
        let endpoint = model.endpoint().to_string();
        let mut probe = AgentProbe {
            command: endpoint.clone(),
            credentials_ok: true,
            credentials: self.credentials.clone(),
            ..AgentProbe::default()
        };
        match model.models().await {
            Ok(models) => {
                probe.available = true;
                probe.detail = format!("{endpoint} reachable");
                probe.version = one_line(&models.join(", "));
            }
            Err(e) => probe.detail = format!("{endpoint} not reachable: {e}"),
        }
        probe
    }

    /// Nothing to rebuild: the answer is in the log, and usage comes only
    /// at the end of a stream.
    fn recover(&self, model: &str, _stdout_lines: &[String]) -> RunOutcome {
        let mut outcome = RunOutcome::new(Verdict::Stopped);
        outcome.model = model.to_string();
        outcome
    }

    async fn run(
        &self,
        request: RunRequest,
        log: &mut LogWriter,
        cancel: CancellationToken,
    ) -> RunOutcome {
        let Some(model) = &self.model else {
            return RunOutcome::new(Verdict::Failed(NOT_CONFIGURED.into()));
        };
        let messages = vec![
            ChatMessage::system(LOCAL_SYSTEM_PROMPT),
            ChatMessage::user(request.prompt),
        ];
        let prompt_chars: usize = messages.iter().map(|m| m.content.chars().count()).sum();
        let mut chat = ChatRequest::new(messages, self.max_tokens);
        chat.model = request.model.clone();
        let shown_model = [request.model.as_str(), model.model()]
            .into_iter()
            .find(|m| !m.is_empty())
            .unwrap_or("its default model");
        system(
            log,
            format!("asking {shown_model} at {}", model.endpoint()),
            Value::Null,
        );
        let mut answer = Answer::new(request.model, prompt_chars);
        let stream = tokio::select! {
            _ = cancel.cancelled() => return answer.outcome(Verdict::Stopped),
            stream = model.chat_stream(chat) => stream,
        };
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(e) => return answer.outcome(verdict_of(e)),
        };
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let verdict = loop {
            tokio::select! {
                _ = cancel.cancelled() => break Verdict::Stopped,
                _ = tick.tick() => answer.flush(log, false),
                item = stream.next() => match item {
                    Some(Ok(ChatChunk::Delta(text))) => {
                        answer.push(&text);
                        if answer.pending.len() >= FLUSH_BYTES {
                            answer.flush(log, false);
                        }
                    }
                    Some(Ok(ChatChunk::Done { model, usage, finish_reason })) => {
                        break answer.done(log, model, usage, finish_reason);
                    }
                    Some(Err(e)) => break verdict_of(e),
                    None => break verdict_of(LlmError::Malformed(
                        "the answer stream ended without its end".into(),
                    )),
                },
            }
        };
        // Dropping the stream closes the connection: the model stops.
        drop(stream);
        answer.flush(log, true);
        answer.outcome(verdict)
    }
}

/// The answer so far.
struct Answer {
    text: String,
    /// Text not yet logged.
    pending: String,
    deltas: u64,
    model: String,
    usage: Option<TokenUsage>,
    prompt_chars: usize,
}

impl Answer {
    fn new(model: String, prompt_chars: usize) -> Self {
        Answer {
            text: String::new(),
            pending: String::new(),
            deltas: 0,
            model,
            usage: None,
            prompt_chars,
        }
    }

    fn push(&mut self, text: &str) {
        self.text.push_str(text);
        self.pending.push_str(text);
        self.deltas += 1;
    }

    /// Logs the waiting text: up to its last line end, or all of it when
    /// it has none (or `all`).
    fn flush(&mut self, log: &mut LogWriter, all: bool) {
        if self.pending.is_empty() {
            return;
        }
        let cut = match self.pending.rfind('\n') {
            Some(i) if !all => i + 1,
            _ => self.pending.len(),
        };
        let piece: String = self.pending.drain(..cut).collect();
        let payload = json!({"type": "text", "text": piece});
        let shown = piece.trim_end_matches('\n').to_string();
        if let Err(e) = log.append(LogKind::Text, shown, payload, "") {
            tracing::warn!(error = %e, "cannot write the execution log");
        }
    }

    fn done(
        &mut self,
        log: &mut LogWriter,
        model: String,
        usage: TokenUsage,
        finish_reason: String,
    ) -> Verdict {
        self.flush(log, true);
        if !model.is_empty() {
            self.model = model;
        }
        if usage != TokenUsage::default() {
            self.usage = Some(usage);
        }
        let (input, output) = self.tokens();
        let payload = json!({
            "type": "result",
            "model": self.model,
            "input_tokens": input,
            "output_tokens": output,
            "usage": if self.usage.is_some() { "reported" } else { "estimated" },
            "finish_reason": finish_reason,
            "result": self.text,
        });
        let reading = format!("answered: {input} tokens in, {output} out ({finish_reason})");
        if let Err(e) = log.append(LogKind::Result, reading, payload, "") {
            tracing::warn!(error = %e, "cannot write the execution log");
        }
        if finish_reason == "length" {
            system(
                log,
                "the answer was cut at [local_model] max_tokens".into(),
                Value::Null,
            );
        }
        if self.text.trim().is_empty() {
            return Verdict::Failed("the local model gave an empty answer".into());
        }
        Verdict::Succeeded
    }

    /// Tokens (in, out): as the endpoint reported them; when it did not (a
    /// stream cut short, or a server that ignores `include_usage`, as
    /// llama.cpp's Python server does), estimated: the deltas received
    /// count as output tokens (such servers send one token per delta), and
    /// input as one token per four characters of the prompt.
    fn tokens(&self) -> (u64, u64) {
        match self.usage {
            Some(u) => (u.prompt_tokens, u.completion_tokens),
            None => (self.prompt_chars.div_ceil(4) as u64, self.deltas),
        }
    }

    fn outcome(self, verdict: Verdict) -> RunOutcome {
        let (input, output) = self.tokens();
        let mut outcome = RunOutcome::new(verdict);
        outcome.model = self.model;
        outcome.input_tokens = input;
        outcome.output_tokens = output;
        outcome.turns = 1;
        outcome.final_text = self.text;
        outcome
    }
}

/// How a failed call ends the attempt: rate limits wait and retry, the
/// rest fail with the reason.
fn verdict_of(error: LlmError) -> Verdict {
    match error {
        LlmError::RateLimited {
            message,
            retry_after,
        } => Verdict::RateLimited {
            message,
            retry_after,
        },
        LlmError::Status {
            status: 503,
            message,
        } => Verdict::RateLimited {
            message: format!("503: {message}"),
            retry_after: None,
        },
        other => Verdict::Failed(format!("the local model failed: {other}")),
    }
}

fn system(log: &mut LogWriter, text: String, payload: Value) {
    if let Err(e) = log.append(LogKind::System, text, payload, "") {
        tracing::warn!(error = %e, "cannot write the execution log");
    }
}
