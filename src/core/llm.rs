//! The seam to a chat model (a local OpenAI-compatible endpoint): what the
//! core asks of it, in core terms. The HTTP client behind it lives in
//! `crate::llm`; the core never sees reqwest. Every caller must survive an
//! absent, slow or wrong model: each use has a fallback.

use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_stream::Stream;

/// Who said a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::System,
            content: content.into(),
        }
    }

    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::User,
            content: content.into(),
        }
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// One chat call.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    /// Empty: the endpoint's configured model.
    pub model: String,
    /// Always set: a small model without a cap can talk for a long time.
    pub max_tokens: u32,
    /// None: the configured default temperature.
    pub temperature: Option<f32>,
    /// Ask for `response_format: json_object`. The answer may still be
    /// off-schema; callers parse leniently and validate.
    pub json: bool,
    /// None: the configured per-call timeout.
    pub timeout: Option<Duration>,
}

impl ChatRequest {
    pub fn new(messages: Vec<ChatMessage>, max_tokens: u32) -> Self {
        ChatRequest {
            messages,
            model: String::new(),
            max_tokens,
            temperature: None,
            json: false,
            timeout: None,
        }
    }
}

/// Tokens a call used, as the endpoint reported them (0 when it did not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// A whole answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatResponse {
    pub content: String,
    /// The model that answered, as the endpoint named it.
    pub model: String,
    pub usage: TokenUsage,
    /// `stop`, `length`, ... as the endpoint said; empty if it did not.
    pub finish_reason: String,
}

/// One piece of a streamed answer.
#[derive(Clone, Debug, PartialEq)]
pub enum ChatChunk {
    /// Text to append to the answer.
    Delta(String),
    /// The end: usage (when the endpoint reports it) and the finish reason.
    Done {
        model: String,
        usage: TokenUsage,
        finish_reason: String,
    },
}

pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, LlmError>> + Send>>;

/// Why a call failed, after the client's own retries.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// No model endpoint is configured.
    #[error("no local model is configured")]
    NotConfigured,
    #[error("the model did not answer within {0:?}")]
    Timeout(Duration),
    /// Connection refused, reset, DNS: the endpoint is not there.
    #[error("cannot reach the model endpoint: {0}")]
    Unreachable(String),
    /// The endpoint kept answering 429 (or asked to wait longer than the
    /// call may last). `retry_after`: how long it asked to wait, if it said.
    #[error("the model endpoint is rate limited: {message}")]
    RateLimited {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The endpoint answered with an error status.
    #[error("the model endpoint answered {status}: {message}")]
    Status { status: u16, message: String },
    /// The endpoint answered something that is not an OpenAI-style reply.
    #[error("the model endpoint answered something unreadable: {0}")]
    Malformed(String),
}

/// A chat model. `crate::llm::OpenAiClient` is the real one; tests may
/// point it at a scripted server or at the real local model.
#[async_trait::async_trait]
pub trait ChatModel: Send + Sync {
    /// The model name sent when a request leaves `model` empty.
    fn model(&self) -> &str;

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, LlmError>;

    /// The answer as it is generated. The stream ends after one `Done`, or
    /// with an error.
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream, LlmError>;

    /// Where the model is served, for messages (e.g. its base URL).
    fn endpoint(&self) -> &str {
        ""
    }

    /// The models the endpoint serves: how `doctor` checks it is reachable.
    async fn models(&self) -> Result<Vec<String>, LlmError> {
        Ok(vec![self.model().to_string()])
    }
}

/// The first JSON object in a model's answer, however it is wrapped: bare,
/// in a code fence, or with prose before and after. Small models often add
/// such wrapping even in JSON mode. `None` when no complete object parses.
pub fn extract_json_object(text: &str) -> Option<serde_json::Value> {
    let text = text.trim();
    if let Ok(value @ serde_json::Value::Object(_)) = serde_json::from_str(text) {
        return Some(value);
    }
    // Try each `{` in turn: the first that starts a complete object wins.
    // Parsing a prefix with a stream deserializer ignores what follows it.
    text.char_indices()
        .filter(|(_, c)| *c == '{')
        .find_map(|(start, _)| {
            let mut objects =
                serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
            match objects.next() {
                Some(Ok(value @ serde_json::Value::Object(_))) => Some(value),
                _ => None,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_objects_are_found_however_they_are_wrapped() {
        let cases = [
            (r#"{"agent": "claude"}"#, Some(json!({"agent": "claude"}))),
            (
                "```json\n{\"agent\": \"gemini\", \"n\": [1, 2]}\n```",
                Some(json!({"agent": "gemini", "n": [1, 2]})),
            ),
            (
                "Sure! Here it is:\n```\n{\"a\": {\"b\": \"}\"}}\n```\nHope that helps.",
                Some(json!({"a": {"b": "}"}})),
            ),
            (
                "I think {not json} but then {\"ok\": true} and {\"second\": 1}",
                Some(json!({"ok": true})),
            ),
            ("  {\"x\": 1}  trailing words", Some(json!({"x": 1}))),
            ("[1, 2, 3]", None),
            ("no json here", None),
            ("{\"cut\": \"off", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(extract_json_object(text), expected, "{text:?}");
        }
    }
}
