//! A scripted OpenAI Responses API on `127.0.0.1:0`, for driving the real
//! `codex` CLI (Codex CLI) offline from integration tests.
//!
//! Point a Codex model provider at [`OpenAiMock::base_url`] (it ends in
//! `/v1`; see `codex_env.rs`). The server runs on its own thread with its own
//! tokio runtime, so it works from plain `#[test]`s and from any
//! `#[tokio::test]` flavour alike; it stops when the [`OpenAiMock`] is dropped
//! (or on [`OpenAiMock::shutdown`]), cutting any stream still open.
//!
//! Routes (matched by suffix, so any base path works):
//! - `POST …/responses`: the [`Script`], streamed as SSE exactly like the
//!   real API (`event: <type>` + `data: <json>`): `response.created`,
//!   `response.in_progress`, per output item `response.output_item.added`,
//!   (messages) `response.content_part.added`, `response.output_text.delta`…,
//!   `response.output_text.done`, `response.content_part.done`, (function
//!   calls) `response.function_call_arguments.delta/done`, (custom tool calls)
//!   `response.custom_tool_call_input.delta/done`, then
//!   `response.output_item.done`, and last `response.completed` with
//!   `usage`. With `stream: false` in the body: one JSON response.
//! - `GET …/models`: a one-model list.
//! - `POST …/chat/completions`: 400 (Codex no longer speaks it).
//! - `HEAD` anything: 200, empty.
//! - anything else: 404 with an OpenAI-style error body, never a hang.
//!
//! A `/responses` request without tools is a side request: it gets a short
//! text and does not advance the conversation logic (it still counts for
//! [`Script::RateLimitedThen`]).
//!
//! Every request is recorded ([`OpenAiMock::requests`]), and counters say
//! how many requests were served, how many `/responses` calls were in flight
//! at most at once, and how many streams finished or were cut.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri, header};
use serde_json::{Value, json};
use tokio_stream::Stream;

use super::http_thread::HttpThread;

/// `input_tokens` the mock reports for every response.
pub const INPUT_TOKENS: u64 = 1234;
/// `output_tokens` the mock reports for every response.
pub const OUTPUT_TOKENS: u64 = 56;

/// What the model does. Chosen once per server.
#[derive(Clone, Debug)]
pub enum Script {
    /// Turn 1: a short message and an `apply_patch` call adding `file`
    /// (relative to the CLI's cwd) with `content`: a freeform
    /// `custom_tool_call` when `apply_patch` is offered as a custom tool (a
    /// known model such as `gpt-5.5`), a `function_call` when it is a
    /// function; without `apply_patch` it falls back to [`Script::ShellWriteThenSummary`]'s
    /// shell command. Turn 2 (the last input item is a `*_call_output`): a
    /// message ending with a `## Summary` section. A follow-up user message
    /// in a conversation that already has assistant messages (a resume): a
    /// short acknowledgement.
    WriteFileThenSummary { file: String, content: String },
    /// Like [`Script::WriteFileThenSummary`], but the file is written by an
    /// `exec_command` function call (`printf … > file`; `shell` with an argv
    /// when only that is offered), so the run shows a `command_execution`
    /// item instead of a `file_change`.
    ShellWriteThenSummary { file: String, content: String },
    /// The first `failures` `/responses` calls get HTTP 429
    /// `rate_limit_exceeded` with `retry-after: retry_after_secs` and a
    /// message ending "Please try again in <retry_after_secs>s."; later calls
    /// behave like `then`. Codex retries a 429 only when it carries
    /// `retry-after`, waits that long, and counts the retries against the
    /// provider's `stream_max_retries` (not `request_max_retries`).
    RateLimitedThen {
        failures: usize,
        retry_after_secs: u64,
        then: Box<Script>,
    },
    /// Every `/responses` call gets the 429 of [`Script::RateLimitedThen`].
    AlwaysRateLimited { retry_after_secs: u64 },
    /// Every `/responses` call gets HTTP 429 `insufficient_quota` without
    /// `retry-after`, as the real API answers an account out of credit:
    /// Codex does not retry it.
    QuotaExceeded,
    /// Streams a message in `chunks` deltas, sleeping `delay_per_event`
    /// before every SSE event after `response.created`; the text ends with a
    /// `## Summary` section. A large `chunks` keeps the request open for
    /// about `chunks × delay_per_event`, long enough to cancel a run.
    Slow {
        delay_per_event: Duration,
        chunks: usize,
    },
}

impl Script {
    /// [`Script::WriteFileThenSummary`] with owned strings.
    pub fn write_file(file: impl Into<String>, content: impl Into<String>) -> Self {
        Script::WriteFileThenSummary {
            file: file.into(),
            content: content.into(),
        }
    }

    /// [`Script::ShellWriteThenSummary`] with owned strings.
    pub fn shell_write_file(file: impl Into<String>, content: impl Into<String>) -> Self {
        Script::ShellWriteThenSummary {
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
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// A `POST …/responses` call.
    pub fn is_responses(&self) -> bool {
        self.method == "POST" && self.path.trim_end_matches('/').ends_with("/responses")
    }

    /// The request's `input` items.
    pub fn input(&self) -> &[Value] {
        self.body
            .as_ref()
            .and_then(|b| b.get("input"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// `type` (or `role` for messages: `message:user`) of each input item.
    pub fn input_kinds(&self) -> Vec<String> {
        self.input()
            .iter()
            .map(|i| {
                let kind = i.get("type").and_then(Value::as_str).unwrap_or("message");
                match i.get("role").and_then(Value::as_str) {
                    Some(role) => format!("{kind}:{role}"),
                    None => kind.to_string(),
                }
            })
            .collect()
    }

    /// The names of the tools offered to the model (`type` for unnamed
    /// built-ins such as `web_search`).
    pub fn tool_names(&self) -> Vec<String> {
        tools(self.body.as_ref().unwrap_or(&Value::Null))
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }
}

/// A running mock. Drop it (or call [`OpenAiMock::shutdown`]) to stop it.
pub struct OpenAiMock {
    server: HttpThread,
    shared: Arc<Shared>,
}

impl OpenAiMock {
    pub fn start(script: Script) -> Self {
        let shared = Arc::new(Shared {
            script,
            started: Instant::now(),
            requests: Mutex::new(Vec::new()),
            served: AtomicUsize::new(0),
            responses_calls: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            streams_completed: AtomicUsize::new(0),
            streams_aborted: AtomicUsize::new(0),
        });
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(shared.clone());
        let server = HttpThread::serve("openai-mock", app);
        OpenAiMock { server, shared }
    }

    /// `http://127.0.0.1:<port>/v1`, for a model provider's `base_url`
    /// (Codex appends `/responses`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.server.addr())
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Only the `POST /responses` calls.
    pub fn responses_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_responses)
            .collect()
    }

    /// Requests answered (or, for streams, started), of any kind.
    pub fn requests_served(&self) -> usize {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// `POST /responses` calls received, including those answered 429.
    pub fn responses_calls(&self) -> usize {
        self.shared.responses_calls.load(Ordering::SeqCst)
    }

    /// `/responses` calls in flight now (a stream counts until its body ends
    /// or the client goes away).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most `/responses` calls ever in flight at once.
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
    pub fn wait_until(&self, timeout: Duration, cond: impl Fn(&OpenAiMock) -> bool) -> bool {
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
                    "{:>7.3}s {} {}{} -> {} ({} bytes, input {:?})",
                    r.at.as_secs_f64(),
                    r.method,
                    r.path,
                    r.query
                        .as_deref()
                        .map(|q| format!("?{q}"))
                        .unwrap_or_default(),
                    r.status,
                    r.body_len,
                    r.input_kinds()
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
    started: Instant,
    requests: Mutex<Vec<RecordedRequest>>,
    served: AtomicUsize,
    responses_calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    streams_completed: AtomicUsize,
    streams_aborted: AtomicUsize,
}

/// Counts one `/responses` call in flight while alive. When it guards a
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
    } else if method == Method::POST && path.ends_with("/responses") {
        let guard = InFlight::enter(&shared);
        let call = shared.responses_calls.fetch_add(1, Ordering::SeqCst);
        match &record.body {
            Some(body) => responses(&shared, call, body, guard),
            None => json_response(
                StatusCode::BAD_REQUEST,
                &error_body(
                    "invalid_request_error",
                    None,
                    "mock: the body is not JSON (compressed?)",
                ),
                &[],
            ),
        }
    } else if method == Method::GET && path.ends_with("/models") {
        json_response(
            StatusCode::OK,
            &json!({"object": "list", "data": [
                {"id": "gpt-5.5", "object": "model", "created": 0, "owned_by": "mock"}
            ]}),
            &[],
        )
    } else if method == Method::POST && path.ends_with("/chat/completions") {
        json_response(
            StatusCode::BAD_REQUEST,
            &error_body(
                "invalid_request_error",
                None,
                "mock: only /v1/responses is implemented",
            ),
            &[],
        )
    } else {
        json_response(
            StatusCode::NOT_FOUND,
            &error_body(
                "invalid_request_error",
                Some("not_found"),
                &format!("mock: no route {method} {uri}"),
            ),
            &[],
        )
    };
    record.status = response.status().as_u16();
    shared.requests.lock().unwrap().push(record);
    response
}

fn rate_limited(retry_after_secs: u64) -> Response<Body> {
    json_response(
        StatusCode::TOO_MANY_REQUESTS,
        &error_body(
            "requests",
            Some("rate_limit_exceeded"),
            &format!(
                "mock: Rate limit reached for requests per min. Please try again in {retry_after_secs}s."
            ),
        ),
        &[
            ("retry-after", retry_after_secs.to_string()),
            ("x-ratelimit-remaining-requests", "0".into()),
            ("x-request-id", new_id("req")),
        ],
    )
}

fn responses(shared: &Arc<Shared>, call: usize, body: &Value, guard: InFlight) -> Response<Body> {
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
                    return rate_limited(*retry_after_secs);
                }
                call -= failures;
                script = then;
            }
            Script::AlwaysRateLimited { retry_after_secs } => {
                return rate_limited(*retry_after_secs);
            }
            Script::QuotaExceeded => {
                return json_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    &error_body(
                        "insufficient_quota",
                        Some("insufficient_quota"),
                        "mock: You exceeded your current quota, please check your plan and billing details.",
                    ),
                    &[("x-request-id", new_id("req"))],
                );
            }
            _ => break,
        }
    }

    let offered = tools(body);
    let (output, delay) = if offered.is_empty() {
        (vec![Item::message("Mock title")], Duration::ZERO)
    } else {
        match script {
            Script::WriteFileThenSummary { file, content } => (
                write_then_summary(body, &offered, file, content, false),
                Duration::ZERO,
            ),
            Script::ShellWriteThenSummary { file, content } => (
                write_then_summary(body, &offered, file, content, true),
                Duration::ZERO,
            ),
            Script::Slow {
                delay_per_event,
                chunks,
            } => (vec![Item::slow_message(*chunks)], *delay_per_event),
            Script::RateLimitedThen { .. }
            | Script::AlwaysRateLimited { .. }
            | Script::QuotaExceeded => unreachable!("answered above"),
        }
    };

    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("gpt-mock")
        .to_string();
    let response_id = new_id("resp_mock");
    let created_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = json!({
        "id": response_id, "object": "response", "created_at": created_at,
        "model": model, "status": "in_progress", "output": [],
    });
    let done: Vec<Value> = output.iter().map(Item::to_json).collect();
    let mut completed = base.clone();
    completed["status"] = json!("completed");
    completed["output"] = json!(done);
    completed["usage"] = usage();

    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        drop(guard);
        return json_response(StatusCode::OK, &completed, &[]);
    }
    let mut events = Events::default();
    events.push(json!({"type": "response.created", "response": base}));
    events.push(json!({"type": "response.in_progress", "response": base}));
    for (index, item) in output.iter().enumerate() {
        item.stream_into(index, &mut events);
    }
    events.push(json!({"type": "response.completed", "response": completed}));

    let mut guard = guard;
    guard.stream = true;
    let stream = SseStream {
        events: events.out.into(),
        first: true,
        delay,
        sleep: None,
        guard: Some(guard),
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-request-id", new_id("req"))
        .body(Body::from_stream(stream))
        .unwrap()
}

fn write_then_summary(
    body: &Value,
    offered: &[(String, String)],
    file: &str,
    content: &str,
    shell: bool,
) -> Vec<Item> {
    let input = body
        .get("input")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let last_kind = input
        .last()
        .and_then(|i| i.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if last_kind.ends_with("_call_output") {
        return vec![Item::message(&format!(
            "I created {file}.\n\n## Summary\nWrote {file} ({} bytes) with the requested content.",
            content.len()
        ))];
    }
    if input
        .iter()
        .any(|i| i.get("role").and_then(Value::as_str) == Some("assistant"))
    {
        // A resumed thread: a follow-up message after earlier turns.
        return vec![Item::message(&format!(
            "Thanks, got your answer (resumed session, {} input items).\n\n## Summary\nResumed and acknowledged.",
            input.len()
        ))];
    }
    let kind_of = |name: &str| {
        offered
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, kind)| kind.as_str())
    };
    let call_id = new_id("call_mock");
    let call = match (shell, kind_of("apply_patch")) {
        (false, Some("custom")) => Item::CustomToolCall {
            call_id,
            name: "apply_patch".into(),
            input: add_file_patch(file, content),
        },
        (false, Some(_)) => Item::FunctionCall {
            call_id,
            name: "apply_patch".into(),
            arguments: json!({"input": add_file_patch(file, content)}).to_string(),
        },
        _ => {
            let command = format!("printf '%s' {} > {}", sh_quote(content), sh_quote(file));
            if kind_of("exec_command").is_some() {
                Item::FunctionCall {
                    call_id,
                    name: "exec_command".into(),
                    arguments: json!({"cmd": command}).to_string(),
                }
            } else if kind_of("shell_command").is_some() {
                Item::FunctionCall {
                    call_id,
                    name: "shell_command".into(),
                    arguments: json!({"command": command}).to_string(),
                }
            } else if kind_of("shell").is_some() {
                Item::FunctionCall {
                    call_id,
                    name: "shell".into(),
                    arguments: json!({"command": ["bash", "-lc", command]}).to_string(),
                }
            } else {
                return vec![Item::message(
                    "Neither apply_patch nor a shell tool is available, so I cannot create the file.",
                )];
            }
        }
    };
    vec![Item::message(&format!("I'll create {file}.")), call]
}

/// An `apply_patch` envelope adding `file` with `content` (each line `+`).
fn add_file_patch(file: &str, content: &str) -> String {
    let mut patch = format!("*** Begin Patch\n*** Add File: {file}\n");
    for line in content.lines() {
        patch.push('+');
        patch.push_str(line);
        patch.push('\n');
    }
    patch.push_str("*** End Patch\n");
    patch
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `(name, type)` of each tool; built-ins without a name are listed by type.
fn tools(body: &Value) -> Vec<(String, String)> {
    body.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| {
            let kind = t.get("type").and_then(Value::as_str).unwrap_or("function");
            let name = t
                .get("name")
                .or_else(|| t.get("function").and_then(|f| f.get("name")))
                .and_then(Value::as_str)
                .unwrap_or(kind);
            (name.to_string(), kind.to_string())
        })
        .collect()
}

enum Item {
    /// An assistant message streamed as these text deltas.
    Message { id: String, deltas: Vec<String> },
    FunctionCall {
        call_id: String,
        name: String,
        arguments: String,
    },
    CustomToolCall {
        call_id: String,
        name: String,
        input: String,
    },
}

impl Item {
    fn message(text: &str) -> Self {
        Item::Message {
            id: new_id("msg"),
            deltas: halves(text),
        }
    }

    fn slow_message(chunks: usize) -> Self {
        let mut deltas: Vec<String> = (1..=chunks.max(1))
            .map(|i| format!("Working slowly, step {i}.\n"))
            .collect();
        deltas.push("\n## Summary\nFinished the slow answer.".into());
        Item::Message {
            id: new_id("msg"),
            deltas,
        }
    }

    fn id(&self) -> String {
        match self {
            Item::Message { id, .. } => id.clone(),
            Item::FunctionCall { call_id, .. } => format!("fc_{call_id}"),
            Item::CustomToolCall { call_id, .. } => format!("ctc_{call_id}"),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Item::Message { id, deltas } => json!({
                "type": "message", "id": id, "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": deltas.concat(), "annotations": []}],
            }),
            Item::FunctionCall {
                call_id,
                name,
                arguments,
            } => json!({
                "type": "function_call", "id": self.id(), "status": "completed",
                "call_id": call_id, "name": name, "arguments": arguments,
            }),
            Item::CustomToolCall {
                call_id,
                name,
                input,
            } => json!({
                "type": "custom_tool_call", "id": self.id(), "status": "completed",
                "call_id": call_id, "name": name, "input": input,
            }),
        }
    }

    /// This item's events, in the real API's order and shape.
    fn stream_into(&self, index: usize, events: &mut Events) {
        let id = self.id();
        let done = self.to_json();
        let mut added = done.clone();
        added["status"] = json!("in_progress");
        match self {
            Item::Message { deltas, .. } => {
                added["content"] = json!([]);
                events.push(
                    json!({"type": "response.output_item.added", "output_index": index, "item": added}),
                );
                events.push(
                    json!({"type": "response.content_part.added", "output_index": index,
                    "item_id": id, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []}}),
                );
                for delta in deltas {
                    events.push(
                        json!({"type": "response.output_text.delta", "output_index": index,
                        "item_id": id, "content_index": 0, "delta": delta}),
                    );
                }
                let text = deltas.concat();
                events.push(
                    json!({"type": "response.output_text.done", "output_index": index,
                    "item_id": id, "content_index": 0, "text": text}),
                );
                events.push(
                    json!({"type": "response.content_part.done", "output_index": index,
                    "item_id": id, "content_index": 0,
                    "part": {"type": "output_text", "text": text, "annotations": []}}),
                );
            }
            Item::FunctionCall { arguments, .. } => {
                added["arguments"] = json!("");
                events.push(
                    json!({"type": "response.output_item.added", "output_index": index, "item": added}),
                );
                for delta in halves(arguments) {
                    events.push(json!({"type": "response.function_call_arguments.delta",
                        "output_index": index, "item_id": id, "delta": delta}));
                }
                events.push(json!({"type": "response.function_call_arguments.done",
                    "output_index": index, "item_id": id, "arguments": arguments}));
            }
            Item::CustomToolCall { input, .. } => {
                added["input"] = json!("");
                events.push(
                    json!({"type": "response.output_item.added", "output_index": index, "item": added}),
                );
                for delta in halves(input) {
                    events.push(json!({"type": "response.custom_tool_call_input.delta",
                        "output_index": index, "item_id": id, "delta": delta}));
                }
                events.push(json!({"type": "response.custom_tool_call_input.done",
                    "output_index": index, "item_id": id, "input": input}));
            }
        }
        events.push(
            json!({"type": "response.output_item.done", "output_index": index, "item": done}),
        );
    }
}

/// SSE events with their `sequence_number`s.
#[derive(Default)]
struct Events {
    out: Vec<Bytes>,
}

impl Events {
    fn push(&mut self, mut event: Value) {
        event["sequence_number"] = json!(self.out.len());
        let kind = event["type"].as_str().unwrap_or("message").to_string();
        self.out
            .push(Bytes::from(format!("event: {kind}\ndata: {event}\n\n")));
    }
}

fn usage() -> Value {
    json!({
        "input_tokens": INPUT_TOKENS, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": OUTPUT_TOKENS, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
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

fn error_body(kind: &str, code: Option<&str>, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase())
}
