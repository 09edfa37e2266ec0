//! A scripted Anthropic Messages API on `127.0.0.1:0`, for driving the real
//! `claude` CLI (Claude Code) offline from integration tests.
//!
//! Point the CLI at [`AnthropicMock::base_url`] through `ANTHROPIC_BASE_URL`.
//! The server runs on its own thread with its own tokio runtime, so it works
//! from plain `#[test]`s and from any `#[tokio::test]` flavour alike; it stops
//! when the [`AnthropicMock`] is dropped (or on [`AnthropicMock::shutdown`]),
//! cutting any stream still open.
//!
//! Routes (the CLI's base URL may carry a path prefix; routes match by suffix):
//! - `HEAD /` (and any HEAD): 200, empty. The CLI preconnects with it.
//! - `POST …/v1/messages[?beta=true]`: the [`Script`], streamed as SSE exactly
//!   like the real API (`message_start`, `ping`, `content_block_start`,
//!   `content_block_delta`, `content_block_stop`, `message_delta` with usage,
//!   `message_stop`), or one JSON message when the body says `stream:false`.
//! - `POST …/v1/messages/count_tokens`: `{"input_tokens": 42}`.
//! - `GET …/v1/models`: a one-model list.
//! - anything else: 404 with an Anthropic-style error body, never a hang.
//!
//! A `/v1/messages` request without tools is a side request (title, topic,
//! quota probe): it gets a short text and does not advance the script's
//! conversation logic (it still counts for [`Script::RateLimitedThen`]);
//! under [`Script::Answer`] every request gets the scripted text.
//!
//! Every request is recorded ([`AnthropicMock::requests`]), and counters say
//! how many requests were served, how many `/v1/messages` calls were in
//! flight at most at once, and how many streams finished or were cut.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};
use serde_json::{Value, json};
use tokio_stream::Stream;

use super::http_thread::HttpThread;

/// `input_tokens` the mock reports for every message (in `message_start`).
pub const INPUT_TOKENS: u64 = 1234;
/// `output_tokens` the mock reports for every message (in `message_delta`).
pub const OUTPUT_TOKENS: u64 = 56;

/// What the model does. Chosen once per server.
#[derive(Clone, Debug)]
pub enum Script {
    /// Turn 1: a short text and a `Write` tool call creating `file` (relative
    /// paths are joined to the CLI's working directory) with `content`.
    /// Turn 2 (the request carries the `tool_result`): a text ending with a
    /// `## Summary` section. A follow-up user message in a conversation that
    /// already has assistant turns (a resume): a short acknowledgement.
    WriteFileThenSummary { file: String, content: String },
    /// The first `failures` `/v1/messages` calls get HTTP 429 with
    /// `retry-after: retry_after_secs` and a `rate_limit_error` body; later
    /// calls behave like `then`.
    RateLimitedThen {
        failures: usize,
        retry_after_secs: u64,
        then: Box<Script>,
    },
    /// Every `/v1/messages` call gets HTTP 529 `overloaded_error`.
    Overloaded,
    /// Every `/v1/messages` call gets HTTP 429 saying the account's usage
    /// limit is reached (a quota, not a short rate limit), with
    /// `retry-after: 1`.
    UsageLimitReached,
    /// Streams a text answer in `chunks` deltas, sleeping `delay_per_event`
    /// before every SSE event after `message_start`; the text ends with a
    /// `## Summary` section. A large `chunks` keeps the request open for
    /// `chunks × delay_per_event`, long enough to cancel or time out a run.
    Slow {
        delay_per_event: Duration,
        chunks: usize,
    },
    /// Every turn answers with a `Write` tool call to a new file
    /// (`turn-<n>.txt`), forever, so `--max-turns` ends the run.
    ManyTurns,
    /// Every `/v1/messages` call, with tools or without (a CLI run with
    /// `--tools ""` sends none), gets this text: a one-shot question.
    Answer(String),
    /// The model runs this shell command with the `Bash` tool, then ends
    /// with a `## Summary`; the tool's output comes back in the next
    /// request (see [`RecordedRequest::tool_results`]).
    Bash(String),
}

impl Script {
    /// [`Script::WriteFileThenSummary`] with owned strings.
    pub fn write_file(file: impl Into<String>, content: impl Into<String>) -> Self {
        Script::WriteFileThenSummary {
            file: file.into(),
            content: content.into(),
        }
    }

    /// [`Script::RateLimitedThen`].
    pub fn rate_limited_then(failures: usize, retry_after_secs: u64, then: Script) -> Self {
        Script::RateLimitedThen {
            failures,
            retry_after_secs,
            then: Box::new(then),
        }
    }
}

/// One request as the mock saw it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub query: Option<String>,
    /// Header names lower-cased. Repeated headers are joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The parsed JSON body, if the body was JSON.
    pub body: Option<Value>,
    pub body_len: usize,
    /// The status the mock answered with.
    pub status: u16,
    /// When it arrived, from the server's start.
    pub at: Duration,
}

impl RecordedRequest {
    /// The text of every tool result the CLI sent back in this request.
    pub fn tool_results(&self) -> Vec<String> {
        let mut found = Vec::new();
        for message in self.messages() {
            let Some(blocks) = message.get("content").and_then(Value::as_array) else {
                continue;
            };
            for block in blocks.iter().filter(|b| b["type"] == "tool_result") {
                match &block["content"] {
                    Value::String(text) => found.push(text.clone()),
                    Value::Array(parts) => found.extend(
                        parts
                            .iter()
                            .filter_map(|p| p["text"].as_str().map(str::to_string)),
                    ),
                    _ => {}
                }
            }
        }
        found
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// A `POST …/v1/messages` call (not `count_tokens`).
    pub fn is_messages(&self) -> bool {
        self.method == "POST" && self.path.ends_with("/v1/messages")
    }

    /// The conversation's `messages` array, if any.
    pub fn messages(&self) -> &[Value] {
        self.body
            .as_ref()
            .and_then(|b| b.get("messages"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The names of the tools offered to the model.
    pub fn tool_names(&self) -> Vec<String> {
        tool_names(self.body.as_ref().unwrap_or(&Value::Null))
    }
}

/// A running mock. Drop it (or call [`AnthropicMock::shutdown`]) to stop it.
pub struct AnthropicMock {
    server: HttpThread,
    shared: Arc<Shared>,
}

impl AnthropicMock {
    /// Starts a mock that finds the CLI's working directory in the request's
    /// system prompt (`Primary working directory: …`).
    pub fn start(script: Script) -> Self {
        Self::launch(script, None)
    }

    /// Starts a mock that resolves relative file names against `cwd`.
    pub fn start_in(script: Script, cwd: impl Into<PathBuf>) -> Self {
        Self::launch(script, Some(cwd.into()))
    }

    fn launch(script: Script, cwd: Option<PathBuf>) -> Self {
        let shared = Arc::new(Shared {
            script,
            cwd,
            started: Instant::now(),
            requests: Mutex::new(Vec::new()),
            served: AtomicUsize::new(0),
            messages_calls: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            streams_completed: AtomicUsize::new(0),
            streams_aborted: AtomicUsize::new(0),
        });
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(shared.clone());
        let server = HttpThread::serve("anthropic-mock", app);
        AnthropicMock { server, shared }
    }

    /// `http://127.0.0.1:<port>`, for `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Only the `POST /v1/messages` calls.
    pub fn message_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_messages)
            .collect()
    }

    /// Requests answered (or, for streams, started), of any kind.
    pub fn requests_served(&self) -> usize {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// `POST /v1/messages` calls received, including those answered 429/529.
    pub fn messages_calls(&self) -> usize {
        self.shared.messages_calls.load(Ordering::SeqCst)
    }

    /// `/v1/messages` calls in flight now (a stream counts until its body
    /// ends or the client goes away).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most `/v1/messages` calls ever in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// SSE streams sent to the end.
    pub fn streams_completed(&self) -> usize {
        self.shared.streams_completed.load(Ordering::SeqCst)
    }

    /// SSE streams dropped before their end (the client disconnected).
    pub fn streams_aborted(&self) -> usize {
        self.shared.streams_aborted.load(Ordering::SeqCst)
    }

    /// Polls `cond` every 20 ms until it holds or `timeout` passes; returns
    /// whether it held.
    pub fn wait_until(&self, timeout: Duration, cond: impl Fn(&AnthropicMock) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A one-line-per-request summary, for failure messages.
    pub fn describe_requests(&self) -> String {
        self.requests()
            .iter()
            .map(|r| {
                format!(
                    "{:>7.3}s {} {}{} -> {} ({} bytes, {} messages)",
                    r.at.as_secs_f64(),
                    r.method,
                    r.path,
                    r.query
                        .as_deref()
                        .map(|q| format!("?{q}"))
                        .unwrap_or_default(),
                    r.status,
                    r.body_len,
                    r.messages().len()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops the server and cuts open streams. Idempotent.
    pub fn shutdown(&mut self) {
        self.server.shutdown();
    }
}

struct Shared {
    script: Script,
    cwd: Option<PathBuf>,
    started: Instant,
    requests: Mutex<Vec<RecordedRequest>>,
    served: AtomicUsize,
    messages_calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    streams_completed: AtomicUsize,
    streams_aborted: AtomicUsize,
}

/// Counts one `/v1/messages` call in flight while alive. When it guards a
/// stream, its drop also says whether the stream reached its end.
struct InFlight {
    shared: Arc<Shared>,
    stream: bool,
    completed: bool,
}

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight {
            shared: shared.clone(),
            stream: false,
            completed: false,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.stream {
            let counter = if self.completed {
                &self.shared.streams_completed
            } else {
                &self.shared.streams_aborted
            };
            counter.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    shared.served.fetch_add(1, Ordering::SeqCst);
    let mut record = RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers: BTreeMap::new(),
        body: serde_json::from_slice(&body).ok(),
        body_len: body.len(),
        status: 0,
        at: shared.started.elapsed(),
    };
    for (name, value) in &headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        record
            .headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }

    let path = uri.path().trim_end_matches('/');
    let response = if method == Method::HEAD {
        empty(StatusCode::OK)
    } else if method == Method::POST && path.ends_with("/v1/messages/count_tokens") {
        json_response(StatusCode::OK, &json!({"input_tokens": 42}), &[])
    } else if method == Method::POST && path.ends_with("/v1/messages") {
        let guard = InFlight::enter(&shared);
        let call = shared.messages_calls.fetch_add(1, Ordering::SeqCst);
        let body = record.body.clone().unwrap_or(Value::Null);
        messages(&shared, call, &body, guard)
    } else if method == Method::GET && path.ends_with("/v1/models") {
        json_response(
            StatusCode::OK,
            &json!({
                "data": [{"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5", "created_at": "2025-09-29T00:00:00Z"}],
                "has_more": false, "first_id": "claude-sonnet-4-5", "last_id": "claude-sonnet-4-5"
            }),
            &[],
        )
    } else {
        json_response(
            StatusCode::NOT_FOUND,
            &error_body("not_found_error", &format!("mock: no route {method} {uri}")),
            &[],
        )
    };
    record.status = response.status().as_u16();
    shared.requests.lock().unwrap().push(record);
    response
}

fn messages(shared: &Arc<Shared>, call: usize, body: &Value, guard: InFlight) -> Response<Body> {
    // Peel off rate-limit layers: call `call` (0-based) of this server.
    let mut script = &shared.script;
    let mut call = call;
    loop {
        match script {
            Script::RateLimitedThen {
                failures,
                retry_after_secs,
                then,
            } => {
                if call < *failures {
                    return json_response(
                        StatusCode::TOO_MANY_REQUESTS,
                        &error_body(
                            "rate_limit_error",
                            "mock: Number of request tokens has exceeded your per-minute rate limit",
                        ),
                        &[
                            ("retry-after", retry_after_secs.to_string()),
                            ("anthropic-ratelimit-requests-remaining", "0".into()),
                            ("request-id", new_id("req_mock")),
                        ],
                    );
                }
                call -= failures;
                script = then;
            }
            Script::UsageLimitReached => {
                return json_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    &error_body(
                        "rate_limit_error",
                        "mock: Claude usage limit reached for this billing period",
                    ),
                    &[
                        ("retry-after", "1".into()),
                        ("request-id", new_id("req_mock")),
                    ],
                );
            }
            Script::Overloaded => {
                return json_response(
                    StatusCode::from_u16(529).unwrap(),
                    &error_body("overloaded_error", "Overloaded"),
                    &[("request-id", new_id("req_mock"))],
                );
            }
            _ => break,
        }
    }

    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("claude-mock")
        .to_string();
    let streaming = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let tools = tool_names(body);

    let (reply, delay) = if let Script::Answer(text) = script {
        (Reply::text(text), Duration::ZERO)
    } else if tools.is_empty() {
        // A side request (title, topic, quota probe …).
        (Reply::text("Mock title"), Duration::ZERO)
    } else {
        match script {
            Script::WriteFileThenSummary { file, content } => (
                write_then_summary(shared, body, &tools, file, content),
                Duration::ZERO,
            ),
            Script::Bash(command) => (bash_then_summary(body, &tools, command), Duration::ZERO),
            Script::ManyTurns => {
                let n = count_role(body, "assistant") + 1;
                let file = format!("turn-{n}.txt");
                let reply = write_call(shared, body, &tools, &file, &format!("turn {n}\n"))
                    .unwrap_or_else(|| Reply::text(NO_WRITE_TOOL));
                (reply, Duration::ZERO)
            }
            Script::Slow {
                delay_per_event,
                chunks,
            } => (Reply::slow_text(*chunks), *delay_per_event),
            Script::RateLimitedThen { .. }
            | Script::Overloaded
            | Script::UsageLimitReached
            | Script::Answer(_) => {
                unreachable!("answered above")
            }
        }
    };

    let msg_id = new_id("msg_mock");
    if !streaming {
        let mut resp = json_response(StatusCode::OK, &reply.message_json(&msg_id, &model), &[]);
        resp.headers_mut().insert(
            "request-id",
            HeaderValue::from_str(&new_id("req_mock")).unwrap(),
        );
        drop(guard);
        return resp;
    }
    let mut guard = guard;
    guard.stream = true;
    let events = reply.sse_events(&msg_id, &model);
    let stream = SseStream {
        events: events.into(),
        first: true,
        delay,
        sleep: None,
        guard: Some(guard),
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("request-id", new_id("req_mock"))
        .body(Body::from_stream(stream))
        .unwrap()
}

fn bash_then_summary(body: &Value, tools: &[String], command: &str) -> Reply {
    if last_user_has_tool_result(body) {
        return Reply::text("I ran it.\n\n## Summary\nRan the command.");
    }
    if !tools.iter().any(|t| t == "Bash") {
        return Reply::text("The Bash tool is not available.");
    }
    Reply {
        blocks: vec![
            Block::Text("I'll run it.".into()),
            Block::ToolUse {
                id: new_id("toolu_mock"),
                name: "Bash".into(),
                input: json!({"command": command, "description": "run it"}),
            },
        ],
        stop_reason: "tool_use",
    }
}

const NO_WRITE_TOOL: &str = "The Write tool is not available, so I cannot create the file.";

fn write_then_summary(
    shared: &Shared,
    body: &Value,
    tools: &[String],
    file: &str,
    content: &str,
) -> Reply {
    if last_user_has_tool_result(body) {
        let path = resolve(shared, body, file);
        return Reply::text(&format!(
            "I created {file}.\n\n## Summary\nWrote {} ({} bytes) with the requested content.",
            path.display(),
            content.len()
        ));
    }
    if count_role(body, "assistant") > 0 {
        // A resumed session: a follow-up message after earlier turns.
        let prior = body
            .get("messages")
            .and_then(Value::as_array)
            .map_or(0, |m| m.len().saturating_sub(1));
        return Reply::text(&format!(
            "Thanks, got your answer (resumed session, {prior} prior messages).\n\n## Summary\nResumed and acknowledged."
        ));
    }
    write_call(shared, body, tools, file, content).unwrap_or_else(|| Reply::text(NO_WRITE_TOOL))
}

fn write_call(
    shared: &Shared,
    body: &Value,
    tools: &[String],
    file: &str,
    content: &str,
) -> Option<Reply> {
    if !tools.iter().any(|t| t == "Write") {
        return None;
    }
    let path = resolve(shared, body, file);
    Some(Reply {
        blocks: vec![
            Block::Text(format!("I'll create {file}.")),
            Block::ToolUse {
                id: new_id("toolu_mock"),
                name: "Write".into(),
                input: json!({"file_path": path.to_string_lossy(), "content": content}),
            },
        ],
        stop_reason: "tool_use",
    })
}

/// `file` if absolute, else joined to the CLI's working directory.
fn resolve(shared: &Shared, body: &Value, file: &str) -> PathBuf {
    let file = Path::new(file);
    if file.is_absolute() {
        return file.to_path_buf();
    }
    let cwd = shared
        .cwd
        .clone()
        .or_else(|| find_cwd(body))
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("/"));
    cwd.join(file)
}

/// The working directory the CLI announces in its system prompt
/// (`- Primary working directory: /abs/path`) or in a message text.
pub fn find_cwd(body: &Value) -> Option<PathBuf> {
    let mut texts: Vec<&str> = Vec::new();
    match body.get("system") {
        Some(Value::String(s)) => texts.push(s),
        Some(Value::Array(blocks)) => texts.extend(
            blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str)),
        ),
        _ => {}
    }
    for m in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match m.get("content") {
            Some(Value::String(s)) => texts.push(s),
            Some(Value::Array(blocks)) => texts.extend(
                blocks
                    .iter()
                    .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                    .filter_map(|b| b.get("text").and_then(Value::as_str)),
            ),
            _ => {}
        }
    }
    for marker in ["Primary working directory:", "Working directory:", "cwd:"] {
        for text in &texts {
            if let Some(at) = text.find(marker) {
                let rest = text[at + marker.len()..].trim_start();
                let path: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                if path.starts_with('/') {
                    return Some(PathBuf::from(path));
                }
            }
        }
    }
    None
}

fn tool_names(body: &Value) -> Vec<String> {
    body.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("name").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

fn count_role(body: &Value, role: &str) -> usize {
    body.get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some(role))
        .count()
}

fn last_user_has_tool_result(body: &Value) -> bool {
    let Some(last) = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
    else {
        return false;
    };
    last.get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
}

enum Block {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// Text streamed as this many deltas.
    ChunkedText(Vec<String>),
}

struct Reply {
    blocks: Vec<Block>,
    stop_reason: &'static str,
}

impl Reply {
    fn text(text: &str) -> Self {
        Reply {
            blocks: vec![Block::Text(text.to_string())],
            stop_reason: "end_turn",
        }
    }

    fn slow_text(chunks: usize) -> Self {
        let mut parts: Vec<String> = (1..=chunks.max(1))
            .map(|i| format!("Working slowly, step {i}.\n"))
            .collect();
        parts.push("\n## Summary\nFinished the slow answer.".into());
        Reply {
            blocks: vec![Block::ChunkedText(parts)],
            stop_reason: "end_turn",
        }
    }

    fn message_json(&self, id: &str, model: &str) -> Value {
        let content: Vec<Value> = self
            .blocks
            .iter()
            .map(|b| match b {
                Block::Text(t) => json!({"type": "text", "text": t}),
                Block::ChunkedText(parts) => json!({"type": "text", "text": parts.concat()}),
                Block::ToolUse { id, name, input } => {
                    json!({"type": "tool_use", "id": id, "name": name, "input": input})
                }
            })
            .collect();
        json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": self.stop_reason, "stop_sequence": null,
            "usage": usage(OUTPUT_TOKENS),
        })
    }

    /// The SSE events of this reply, in the real API's order and shape.
    fn sse_events(&self, id: &str, model: &str) -> Vec<Bytes> {
        let mut out = vec![sse(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": usage(1),
            }}),
        )];
        out.push(sse("ping", &json!({"type": "ping"})));
        for (index, block) in self.blocks.iter().enumerate() {
            let (start, deltas): (Value, Vec<Value>) = match block {
                Block::Text(text) => (
                    json!({"type": "text", "text": ""}),
                    halves(text)
                        .into_iter()
                        .map(|t| json!({"type": "text_delta", "text": t}))
                        .collect(),
                ),
                Block::ChunkedText(parts) => (
                    json!({"type": "text", "text": ""}),
                    parts
                        .iter()
                        .map(|t| json!({"type": "text_delta", "text": t}))
                        .collect(),
                ),
                Block::ToolUse { id, name, input } => (
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    halves(&input.to_string())
                        .into_iter()
                        .map(|j| json!({"type": "input_json_delta", "partial_json": j}))
                        .collect(),
                ),
            };
            out.push(sse(
                "content_block_start",
                &json!({"type": "content_block_start", "index": index, "content_block": start}),
            ));
            for delta in deltas {
                out.push(sse(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": delta}),
                ));
            }
            out.push(sse(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
        }
        out.push(sse(
            "message_delta",
            &json!({"type": "message_delta",
                "delta": {"stop_reason": self.stop_reason, "stop_sequence": null},
                "usage": {"output_tokens": OUTPUT_TOKENS}}),
        ));
        out.push(sse("message_stop", &json!({"type": "message_stop"})));
        out
    }
}

fn usage(output_tokens: u64) -> Value {
    json!({
        "input_tokens": INPUT_TOKENS, "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
    })
}

/// Splits at a char boundary near the middle, so deltas really are partial.
fn halves(s: &str) -> Vec<String> {
    let mut mid = s.len() / 2;
    while !s.is_char_boundary(mid) {
        mid += 1;
    }
    let (a, b) = s.split_at(mid);
    [a, b]
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

fn sse(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// A finite SSE body that sleeps `delay` before every event but the first,
/// and counts itself in flight until it ends or is dropped.
struct SseStream {
    events: std::collections::VecDeque<Bytes>,
    first: bool,
    delay: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    guard: Option<InFlight>,
}

impl Stream for SseStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.events.is_empty() {
            if let Some(mut guard) = this.guard.take() {
                guard.completed = true;
            }
            return Poll::Ready(None);
        }
        if !this.first && !this.delay.is_zero() {
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(this.delay)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        this.first = false;
        Poll::Ready(this.events.pop_front().map(Ok))
    }
}

fn empty(status: StatusCode) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, "0")
        .body(Body::empty())
        .unwrap()
}

fn json_response(status: StatusCode, body: &Value, headers: &[(&str, String)]) -> Response<Body> {
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": new_id("req_mock")})
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase())
}
