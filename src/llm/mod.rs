//! The OpenAI-compatible chat client behind [`ChatModel`]: `POST
//! {endpoint}/chat/completions` over reqwest, whole or streamed (SSE), for
//! Ollama, vLLM, llama.cpp, LM Studio or any other server speaking that API.
//!
//! Each call has one time budget (the request's timeout, else the
//! configured one). Within it, 429, 502, 503, 504 and connection failures
//! are retried with jittered exponential backoff (backon), waiting what a
//! `Retry-After` header asks (seconds or an HTTP date) when it asks more; a
//! wait that would overrun the budget ends the retries with the error at
//! hand. A stream's budget covers getting the answer started; after that
//! the same duration bounds each silence between two pieces.
//!
//! At most `max_concurrent` calls are in flight at once (a stream counts
//! until it ends); waiting for a turn counts against the budget. Servers
//! such as llama.cpp's answer one request at a time and cut a running
//! stream short when another request comes in, so calls through one client
//! never interrupt each other.

mod sse;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::config::LocalModelConfig;
use crate::core::llm::{
    ChatChunk, ChatModel, ChatRequest, ChatResponse, ChatStream, LlmError, TokenUsage,
};
use sse::SseParser;

/// How an [`OpenAiClient`] reaches its endpoint.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// Base URL up to `/v1`, e.g. `http://127.0.0.1:18080/v1`.
    pub endpoint: String,
    /// Sent as `model` when a request names none; empty sends none.
    pub model: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<String>,
    /// A call's budget when the request sets none.
    pub timeout: Duration,
    /// Used when the request sets none.
    pub temperature: f32,
    /// Retries after the first try (429, 502–504, connection errors).
    pub max_retries: usize,
    /// The first backoff; it doubles per retry, up to 5 s.
    pub retry_base: Duration,
    /// Calls in flight at once (at least 1).
    pub max_concurrent: usize,
}

impl ClientSettings {
    pub fn new(endpoint: impl Into<String>) -> Self {
        ClientSettings {
            endpoint: endpoint.into(),
            model: String::new(),
            api_key: None,
            timeout: Duration::from_secs(60),
            temperature: 0.2,
            max_retries: 3,
            retry_base: Duration::from_millis(250),
            max_concurrent: 1,
        }
    }
}

/// The longest backoff between two retries (a `Retry-After` may ask more).
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How much of an error body goes into an error message.
const ERROR_EXCERPT: usize = 300;

/// An OpenAI-compatible chat endpoint.
#[derive(Clone, Debug)]
pub struct OpenAiClient {
    http: reqwest::Client,
    settings: ClientSettings,
    /// Turns to call the endpoint: `max_concurrent` of them.
    turns: Arc<Semaphore>,
}

/// One failed try, and whether another may help.
#[derive(Debug)]
struct Failure {
    error: LlmError,
    retryable: bool,
    retry_after: Option<Duration>,
}

impl OpenAiClient {
    pub fn new(mut settings: ClientSettings) -> Result<Self, LlmError> {
        settings.endpoint = settings.endpoint.trim().trim_end_matches('/').to_string();
        if settings.endpoint.is_empty() {
            return Err(LlmError::NotConfigured);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| LlmError::Unreachable(format!("cannot build the HTTP client: {e}")))?;
        let turns = Arc::new(Semaphore::new(settings.max_concurrent.max(1)));
        Ok(OpenAiClient {
            http,
            settings,
            turns,
        })
    }

    /// The client `[local_model]` describes; None when it names no endpoint
    /// (or the client cannot be built, which is logged).
    pub fn from_config(config: &LocalModelConfig) -> Option<OpenAiClient> {
        if config.endpoint.trim().is_empty() {
            return None;
        }
        match OpenAiClient::new(config.client_settings()) {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::warn!(error = %e, "local model disabled");
                None
            }
        }
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// The JSON body of a chat call.
    pub fn request_body(&self, request: &ChatRequest, stream: bool) -> Value {
        let mut body = json!({
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature.unwrap_or(self.settings.temperature),
            "stream": stream,
        });
        let model = if request.model.is_empty() {
            &self.settings.model
        } else {
            &request.model
        };
        if !model.is_empty() {
            body["model"] = json!(model);
        }
        if request.json {
            body["response_format"] = json!({"type": "json_object"});
        }
        if stream {
            // Servers that do not know it leave it out of the stream.
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    }

    fn budget(&self, request: &ChatRequest) -> Duration {
        request.timeout.unwrap_or(self.settings.timeout)
    }

    /// Waits for a turn, then posts `body` until an answer starts with 200,
    /// retrying what may pass, all within `budget`. The turn is held until
    /// the caller drops it.
    async fn post(
        &self,
        body: &Value,
        budget: Duration,
    ) -> Result<(reqwest::Response, OwnedSemaphorePermit, Instant), LlmError> {
        let deadline = Instant::now() + budget;
        let turn = match tokio::time::timeout_at(
            deadline.into(),
            self.turns.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(turn)) => turn,
            Ok(Err(_)) => return Err(LlmError::Unreachable("the client is closed".into())),
            Err(_) => return Err(LlmError::Timeout(budget)),
        };
        let url = format!("{}/chat/completions", self.settings.endpoint);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_base)
            .with_max_delay(MAX_BACKOFF)
            .with_max_times(self.settings.max_retries)
            .with_jitter();
        let attempt = || self.try_post(&url, body);
        let retried = attempt
            .retry(backoff)
            .when(|f: &Failure| f.retryable)
            .adjust(|f: &Failure, planned: Option<Duration>| {
                // Out of retries, or the wait would overrun the budget: stop.
                let wait = planned?.max(f.retry_after.unwrap_or_default());
                (Instant::now() + wait < deadline).then_some(wait)
            })
            .notify(|f: &Failure, wait: Duration| {
                tracing::info!(error = %f.error, wait_ms = wait.as_millis() as u64, "retrying the model endpoint");
            });
        match tokio::time::timeout_at(deadline.into(), retried).await {
            Ok(Ok(response)) => Ok((response, turn, deadline)),
            Ok(Err(failure)) => Err(failure.error),
            Err(_) => Err(LlmError::Timeout(budget)),
        }
    }

    async fn try_post(&self, url: &str, body: &Value) -> Result<reqwest::Response, Failure> {
        let mut request = self.http.post(url).json(body);
        if let Some(key) = &self.settings.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| Failure {
            retryable: e.is_connect() || e.is_request(),
            error: LlmError::Unreachable(error_chain(&e)),
            retry_after: None,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let message = error_message(&response.text().await.unwrap_or_default());
        let error = if status == StatusCode::TOO_MANY_REQUESTS {
            LlmError::RateLimited {
                message,
                retry_after,
            }
        } else {
            LlmError::Status {
                status: status.as_u16(),
                message,
            }
        };
        Err(Failure {
            error,
            retryable: matches!(status.as_u16(), 429 | 502 | 503 | 504),
            retry_after,
        })
    }

    async fn get_models(&self) -> Result<Vec<String>, LlmError> {
        let url = format!("{}/models", self.settings.endpoint);
        let mut request = self
            .http
            .get(url)
            .timeout(self.settings.timeout.min(Duration::from_secs(10)));
        if let Some(key) = &self.settings.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                LlmError::Timeout(self.settings.timeout.min(Duration::from_secs(10)))
            } else {
                LlmError::Unreachable(error_chain(&e))
            }
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(LlmError::Status {
                status: status.as_u16(),
                message: error_message(&text),
            });
        }
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| LlmError::Malformed(format!("GET /models: {e}")))?;
        Ok(value
            .get("data")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_string))
            .collect())
    }
}

#[async_trait::async_trait]
impl ChatModel for OpenAiClient {
    fn model(&self) -> &str {
        &self.settings.model
    }

    fn endpoint(&self) -> &str {
        &self.settings.endpoint
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        let budget = self.budget(&request);
        let (response, turn, deadline) = self
            .post(&self.request_body(&request, false), budget)
            .await?;
        let text = match tokio::time::timeout_at(deadline.into(), response.text()).await {
            Ok(Ok(text)) => text,
            Ok(Err(e)) => return Err(LlmError::Unreachable(error_chain(&e))),
            Err(_) => return Err(LlmError::Timeout(budget)),
        };
        drop(turn);
        parse_completion(&text)
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream, LlmError> {
        let budget = self.budget(&request);
        let (response, turn, _) = self
            .post(&self.request_body(&request, true), budget)
            .await?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(forward_sse(response, tx, budget, turn));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn models(&self) -> Result<Vec<String>, LlmError> {
        self.get_models().await
    }
}

/// Reads an SSE answer into chunks until `Done`, an error, or the receiver
/// going away (which drops the response and so closes the connection: how
/// a cancelled run stops the model).
async fn forward_sse(
    response: reqwest::Response,
    tx: mpsc::Sender<Result<ChatChunk, LlmError>>,
    idle: Duration,
    _turn: OwnedSemaphorePermit,
) {
    let mut bytes = Box::pin(response.bytes_stream());
    let mut parser = SseParser::default();
    loop {
        let next = tokio::select! {
            _ = tx.closed() => return,
            next = tokio::time::timeout(idle, bytes.next()) => next,
        };
        let items = match next {
            Err(_) => vec![Err(LlmError::Timeout(idle))],
            Ok(None) => vec![parser.finish()],
            Ok(Some(Err(e))) => vec![Err(LlmError::Unreachable(error_chain(&e)))],
            Ok(Some(Ok(data))) => parser.feed(&data),
        };
        for item in items {
            let last = !matches!(item, Ok(ChatChunk::Delta(_)));
            if tx.send(item).await.is_err() || last {
                return;
            }
        }
    }
}

/// A whole (non-streamed) chat completion.
fn parse_completion(text: &str) -> Result<ChatResponse, LlmError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        LlmError::Malformed(format!("not JSON ({e}): {}", excerpt(text, ERROR_EXCERPT)))
    })?;
    let choice = value.get("choices").and_then(|c| c.get(0)).ok_or_else(|| {
        LlmError::Malformed(format!("no choices: {}", excerpt(text, ERROR_EXCERPT)))
    })?;
    Ok(ChatResponse {
        content: choice
            .pointer("/message/content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        model: str_field(&value, "model"),
        usage: usage_of(&value).unwrap_or_default(),
        finish_reason: str_field(choice, "finish_reason"),
    })
}

fn str_field(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// `usage` of an OpenAI answer or stream chunk, when it has one.
fn usage_of(value: &Value) -> Option<TokenUsage> {
    let usage = value.get("usage").filter(|u| u.is_object())?;
    let count = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or_default();
    Some(TokenUsage {
        prompt_tokens: count("prompt_tokens"),
        completion_tokens: count("completion_tokens"),
    })
}

/// How long a `Retry-After` header asks to wait: seconds, or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The message of an OpenAI-style error body, else the body's start.
fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("error"))
            .or_else(|| v.get("message"))
            .and_then(Value::as_str)
    });
    let message = message.unwrap_or(body).trim();
    if message.is_empty() {
        "(no message)".into()
    } else {
        excerpt(message, ERROR_EXCERPT)
    }
}

fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// A reqwest error with its causes ("error sending request: connection refused").
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::llm::ChatMessage;

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let cases = [
            ("3", Some(Duration::from_secs(3))),
            (" 0 ", Some(Duration::ZERO)),
            ("1.5", Some(Duration::from_millis(1500))),
            (
                "Wed, 21 Oct 2015 07:28:10 GMT",
                Some(Duration::from_secs(10)),
            ),
            ("Wed, 21 Oct 2015 07:27:00 GMT", Some(Duration::ZERO)),
            ("-4", None),
            ("soon", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_retry_after(text, now), expected, "{text}");
        }
    }

    #[test]
    fn the_body_carries_what_the_request_asks() {
        let mut settings = ClientSettings::new("http://127.0.0.1:1/v1/");
        settings.model = "tiny".into();
        let client = OpenAiClient::new(settings).unwrap();
        assert_eq!(client.settings().endpoint, "http://127.0.0.1:1/v1");
        let mut request = ChatRequest::new(vec![ChatMessage::user("hi")], 32);
        request.json = true;
        let body = client.request_body(&request, true);
        assert_eq!(body["model"], "tiny");
        assert_eq!(body["max_tokens"], 32);
        assert_eq!(body["response_format"]["type"], "json_object");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["messages"][0]["role"], "user");
        request.model = "other".into();
        request.json = false;
        request.temperature = Some(0.9);
        let body = client.request_body(&request, false);
        assert_eq!(body["model"], "other");
        assert!(body.get("response_format").is_none());
        assert!(body.get("stream_options").is_none());
        assert!((body["temperature"].as_f64().unwrap() - 0.9).abs() < 1e-6);
    }

    #[test]
    fn completions_parse_or_say_what_is_wrong() {
        let ok = r#"{"model":"m","choices":[{"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#;
        let answer = parse_completion(ok).unwrap();
        assert_eq!(answer.content, "hi");
        assert_eq!(answer.model, "m");
        assert_eq!(answer.finish_reason, "stop");
        assert_eq!(answer.usage.prompt_tokens, 5);
        assert_eq!(answer.usage.completion_tokens, 2);
        let null_content = r#"{"choices":[{"message":{"content":null}}]}"#;
        assert_eq!(parse_completion(null_content).unwrap().content, "");
        for bad in ["", "<html>", r#"{"choices":[]}"#] {
            assert!(
                matches!(parse_completion(bad), Err(LlmError::Malformed(_))),
                "{bad}"
            );
        }
        assert_eq!(
            error_message(r#"{"error":{"message":"slow down","type":"x"}}"#),
            "slow down"
        );
        assert_eq!(error_message(""), "(no message)");
    }

    #[test]
    fn no_endpoint_means_no_client() {
        assert!(matches!(
            OpenAiClient::new(ClientSettings::new("  ")),
            Err(LlmError::NotConfigured)
        ));
    }
}
