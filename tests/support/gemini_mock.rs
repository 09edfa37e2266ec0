//! A scripted Gemini API (`generativelanguage` v1beta) on `127.0.0.1:0`, for
//! driving the real `gemini` CLI (Gemini CLI) offline from integration tests.
//!
//! Point the CLI at [`GeminiMock::base_url`] through `GOOGLE_GEMINI_BASE_URL`
//! (see `gemini_env.rs`). The server runs on its own thread with its own
//! tokio runtime, so it works from plain `#[test]`s and from any
//! `#[tokio::test]` flavour alike; it stops when the [`GeminiMock`] is dropped
//! (or on [`GeminiMock::shutdown`]), cutting any stream still open.
//!
//! Routes (matched by suffix, so a base URL with a path prefix works too):
//! - `POST …/models/<m>:streamGenerateContent?alt=sse`: the [`Script`],
//!   streamed as SSE exactly like the real API: `data: <GenerateContentResponse>`
//!   chunks, the last one with `finishReason: STOP` and `usageMetadata`.
//! - `POST …/models/<m>:generateContent`: one JSON `GenerateContentResponse`.
//!   A call without tools is a side call (the `auto` model router, the
//!   next-speaker check, a session summary): with
//!   `responseMimeType: application/json` it gets a JSON text filled in from
//!   the request's `responseJsonSchema` (the router gets
//!   `{"complexity_reasoning": "…", "complexity_score": 10}`), otherwise a
//!   short text. A call with tools follows the script like a streamed one.
//! - `POST …:countTokens`: `{"totalTokens": 42}`.
//! - `GET …/models`: a one-model list; `GET …/models/<m>`: that model.
//! - `HEAD` anything: 200, empty.
//! - anything else: 404 with a Google-style error body, never a hang.
//!
//! Side calls do not advance the script's conversation logic, but every model
//! call (`:streamGenerateContent` and `:generateContent`) counts for
//! [`Script::RateLimitedThen`].
//!
//! Every request is recorded ([`GeminiMock::requests`]), and counters say how
//! many requests were served, how many model calls were in flight at most at
//! once, and how many streams finished or were cut.
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
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri, header};
use serde_json::{Value, json};
use tokio_stream::Stream;

use super::http_thread::HttpThread;

/// `promptTokenCount` the mock reports for every model call.
pub const INPUT_TOKENS: u64 = 1234;
/// `candidatesTokenCount` the mock reports for every model call.
pub const OUTPUT_TOKENS: u64 = 56;
/// The message of the mock's 429 `RESOURCE_EXHAUSTED` errors.
pub const RATE_LIMIT_MESSAGE: &str = "mock: Resource has been exhausted (e.g. check quota).";

/// What the model does. Chosen once per server.
#[derive(Clone, Debug)]
pub enum Script {
    /// Turn 1: a short text and a `write_file` call creating `file` (relative
    /// paths are joined to the CLI's workspace directory) with `content`.
    /// Turn 2 (the last content carries the `functionResponse`): a text
    /// ending with a `## Summary` section. A follow-up user message in a
    /// conversation that already has model turns (a resume): a short
    /// acknowledgement.
    WriteFileThenSummary { file: String, content: String },
    /// The first `failures` model calls get HTTP 429 `RESOURCE_EXHAUSTED`
    /// whose `error.details` carry a `google.rpc.RetryInfo` with
    /// `retryDelay: "<retry_delay_secs>s"` (the Gemini CLI reads that, not the
    /// `retry-after` header, which is sent too); later calls behave like
    /// `then`.
    RateLimitedThen {
        failures: usize,
        retry_delay_secs: u64,
        then: Box<Script>,
    },
    /// Every model call gets the 429 of [`Script::RateLimitedThen`]: a rate
    /// limit that never ends.
    AlwaysRateLimited { retry_delay_secs: u64 },
    /// Every model call gets HTTP 429 whose `QuotaFailure` names a per-day
    /// quota: the CLI takes it as terminal and does not retry.
    DailyQuotaExhausted,
    /// Streams a text answer in `chunks` chunks, sleeping `delay_per_event`
    /// before every SSE event after the first; the text ends with a
    /// `## Summary` section. A large `chunks` keeps the request open for
    /// `chunks × delay_per_event`, long enough to cancel or time out a run.
    Slow {
        delay_per_event: Duration,
        chunks: usize,
    },
    /// Every turn answers with a `write_file` call to a new file
    /// (`turn-<n>.txt`), forever, so `model.maxSessionTurns` ends the run.
    ManyTurns,
    /// Every conversation call (streamed, or with tools) gets this text: a
    /// one-shot question. Side calls are answered as usual.
    Answer(String),
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
    pub fn rate_limited_then(failures: usize, retry_delay_secs: u64, then: Script) -> Self {
        Script::RateLimitedThen {
            failures,
            retry_delay_secs,
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

    /// A `POST …:streamGenerateContent` call.
    pub fn is_stream(&self) -> bool {
        self.method == "POST" && self.path.ends_with(":streamGenerateContent")
    }

    /// A model call: `:streamGenerateContent` or `:generateContent`.
    pub fn is_model_call(&self) -> bool {
        self.method == "POST"
            && (self.path.ends_with(":streamGenerateContent")
                || self.path.ends_with(":generateContent"))
    }

    /// A model call without tools (router, next-speaker check, summary).
    pub fn is_side_call(&self) -> bool {
        self.is_model_call() && self.tool_names().is_empty()
    }

    /// The model named in the path (`…/models/<model>:method`).
    pub fn model(&self) -> Option<&str> {
        model_of(&self.path)
    }

    /// The conversation's `contents` array, if any.
    pub fn contents(&self) -> &[Value] {
        self.body
            .as_ref()
            .and_then(|b| b.get("contents"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The names of the functions offered to the model.
    pub fn tool_names(&self) -> Vec<String> {
        tool_names(self.body.as_ref().unwrap_or(&Value::Null))
    }
}

/// A running mock. Drop it (or call [`GeminiMock::shutdown`]) to stop it.
pub struct GeminiMock {
    server: HttpThread,
    shared: Arc<Shared>,
}

impl GeminiMock {
    /// Starts a mock that finds the CLI's workspace directory in the request
    /// (`- **Workspace Directories:**\n  - /abs/path` in the session context).
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
            model_calls: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            streams_completed: AtomicUsize::new(0),
            streams_aborted: AtomicUsize::new(0),
        });
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(shared.clone());
        let server = HttpThread::serve("gemini-mock", app);
        GeminiMock { server, shared }
    }

    /// `http://127.0.0.1:<port>`, for `GOOGLE_GEMINI_BASE_URL` (the SDK
    /// appends `/v1beta/models/…`).
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

    /// Only the model calls (`:streamGenerateContent`, `:generateContent`).
    pub fn model_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_model_call)
            .collect()
    }

    /// Only the `:streamGenerateContent` calls (the conversation's turns).
    pub fn stream_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_stream)
            .collect()
    }

    /// Requests answered (or, for streams, started), of any kind.
    pub fn requests_served(&self) -> usize {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// Model calls received, including those answered 429.
    pub fn model_calls(&self) -> usize {
        self.shared.model_calls.load(Ordering::SeqCst)
    }

    /// Model calls in flight now (a stream counts until its body ends or the
    /// client goes away).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most model calls ever in flight at once.
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
    pub fn wait_until(&self, timeout: Duration, cond: impl Fn(&GeminiMock) -> bool) -> bool {
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
                    "{:>7.3}s {} {}{} -> {} ({} bytes, {} contents, {} tools)",
                    r.at.as_secs_f64(),
                    r.method,
                    r.path,
                    r.query
                        .as_deref()
                        .map(|q| format!("?{q}"))
                        .unwrap_or_default(),
                    r.status,
                    r.body_len,
                    r.contents().len(),
                    r.tool_names().len()
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
    model_calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    streams_completed: AtomicUsize,
    streams_aborted: AtomicUsize,
}

/// Counts one model call in flight while alive. When it guards a stream, its
/// drop also says whether the stream reached its end.
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
    } else if method == Method::POST && path.ends_with(":countTokens") {
        json_response(StatusCode::OK, &json!({"totalTokens": 42}), &[])
    } else if method == Method::POST
        && (path.ends_with(":streamGenerateContent") || path.ends_with(":generateContent"))
    {
        let guard = InFlight::enter(&shared);
        let call = shared.model_calls.fetch_add(1, Ordering::SeqCst);
        let body = record.body.clone().unwrap_or(Value::Null);
        let model = model_of(path).unwrap_or("gemini-mock").to_string();
        let streaming = path.ends_with(":streamGenerateContent");
        generate(&shared, call, &model, streaming, &body, guard)
    } else if method == Method::GET && path.ends_with("/models") {
        json_response(
            StatusCode::OK,
            &json!({"models": [model_info("gemini-2.5-flash")]}),
            &[],
        )
    } else if method == Method::GET && path.contains("/models/") {
        let name = path.rsplit('/').next().unwrap_or("gemini-2.5-flash");
        json_response(StatusCode::OK, &model_info(name), &[])
    } else {
        json_response(
            StatusCode::NOT_FOUND,
            &error_body(
                404,
                "NOT_FOUND",
                &format!("mock: no route {method} {uri}"),
                json!([]),
            ),
            &[],
        )
    };
    record.status = response.status().as_u16();
    shared.requests.lock().unwrap().push(record);
    response
}

fn model_info(name: &str) -> Value {
    json!({
        "name": format!("models/{name}"), "version": "001", "displayName": name,
        "inputTokenLimit": 1_048_576, "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
    })
}

/// The 429 a rate-limited Gemini API sends: `RESOURCE_EXHAUSTED` with a
/// `RetryInfo` detail (what the CLI's `classifyGoogleError` reads).
fn rate_limited(retry_delay_secs: u64) -> Response<Body> {
    json_response(
        StatusCode::TOO_MANY_REQUESTS,
        &error_body(
            429,
            "RESOURCE_EXHAUSTED",
            RATE_LIMIT_MESSAGE,
            json!([{
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": format!("{retry_delay_secs}s"),
            }]),
        ),
        &[("retry-after", retry_delay_secs.to_string())],
    )
}

fn generate(
    shared: &Arc<Shared>,
    call: usize,
    model: &str,
    streaming: bool,
    body: &Value,
    guard: InFlight,
) -> Response<Body> {
    // Peel off rate-limit layers: call `call` (0-based) of this server.
    let mut script = &shared.script;
    let mut call = call;
    loop {
        match script {
            Script::RateLimitedThen {
                failures,
                retry_delay_secs,
                then,
            } => {
                if call < *failures {
                    return rate_limited(*retry_delay_secs);
                }
                call -= failures;
                script = then;
            }
            Script::AlwaysRateLimited { retry_delay_secs } => {
                return rate_limited(*retry_delay_secs);
            }
            Script::DailyQuotaExhausted => {
                return json_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    &error_body(
                        429,
                        "RESOURCE_EXHAUSTED",
                        "mock: You exceeded your current quota, please check your plan and billing details.",
                        json!([{
                            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                            "violations": [{
                                "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                                "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                            }],
                        }]),
                    ),
                    &[],
                );
            }
            _ => break,
        }
    }

    let tools = tool_names(body);
    let (reply, delay) =
        if let (Script::Answer(text), true) = (script, streaming || !tools.is_empty()) {
            (Reply::text(text), Duration::ZERO)
        } else if tools.is_empty() {
            (side_reply(body), Duration::ZERO)
        } else {
            match script {
                Script::WriteFileThenSummary { file, content } => (
                    write_then_summary(shared, body, &tools, file, content),
                    Duration::ZERO,
                ),
                Script::ManyTurns => {
                    let n = count_role(body, "model") + 1;
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
                | Script::AlwaysRateLimited { .. }
                | Script::DailyQuotaExhausted
                | Script::Answer(_) => unreachable!("answered above"),
            }
        };

    let response_id = new_id("mockresp");
    if !streaming {
        let resp = json_response(
            StatusCode::OK,
            &reply.response_json(model, &response_id),
            &[],
        );
        drop(guard);
        return resp;
    }
    let mut guard = guard;
    guard.stream = true;
    let stream = SseStream {
        events: reply.sse_events(model, &response_id).into(),
        first: true,
        delay,
        sleep: None,
        guard: Some(guard),
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap()
}

const NO_WRITE_TOOL: &str = "The write_file tool is not available, so I cannot create the file.";

/// A side call (no tools): JSON filled in from the schema when JSON is asked
/// for (the `auto` router, the next-speaker check), else a short text.
fn side_reply(body: &Value) -> Reply {
    let config = body.get("generationConfig").unwrap_or(&Value::Null);
    if config.get("responseMimeType").and_then(Value::as_str) == Some("application/json") {
        let schema = config
            .get("responseJsonSchema")
            .or_else(|| config.get("responseSchema"))
            .unwrap_or(&Value::Null);
        return Reply::text(&fill_schema(schema).to_string());
    }
    Reply::text("Mock summary: a short session.")
}

/// A plausible value for a side call's response schema. Enums prefer
/// `user` (the next-speaker check: the user speaks next, the turn ends) and
/// flash models; integers are 10 (a low router complexity score).
fn fill_schema(schema: &Value) -> Value {
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        for preferred in ["user", "flash", "FLASH"] {
            if options.iter().any(|o| o == preferred) {
                return json!(preferred);
            }
        }
        return options.first().cloned().unwrap_or(json!("mock"));
    }
    let kind = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        return Value::Object(
            props
                .iter()
                .map(|(k, v)| (k.clone(), fill_schema(v)))
                .collect(),
        );
    }
    match kind.as_str() {
        "object" => json!({}),
        "array" => json!([]),
        "integer" | "number" => json!(10),
        "boolean" => json!(false),
        _ => json!("mock: a simple, direct task"),
    }
}

fn write_then_summary(
    shared: &Shared,
    body: &Value,
    tools: &[String],
    file: &str,
    content: &str,
) -> Reply {
    if last_has_function_response(body) {
        let path = resolve(shared, body, file);
        return Reply::text(&format!(
            "I created {file}.\n\n## Summary\nWrote {} ({} bytes) with the requested content.",
            path.display(),
            content.len()
        ));
    }
    if count_role(body, "model") > 0 {
        // A resumed session: a follow-up message after earlier turns.
        let prior = body
            .get("contents")
            .and_then(Value::as_array)
            .map_or(0, |c| c.len().saturating_sub(1));
        return Reply::text(&format!(
            "Thanks, got your answer (resumed session, {prior} prior contents).\n\n## Summary\nResumed and acknowledged."
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
    if !tools.iter().any(|t| t == "write_file") {
        return None;
    }
    let path = resolve(shared, body, file);
    Some(Reply {
        parts: vec![
            Part::Text(format!("I'll create {file}.")),
            Part::FunctionCall {
                name: "write_file".into(),
                args: json!({"file_path": path.to_string_lossy(), "content": content}),
            },
        ],
    })
}

/// `file` if absolute, else joined to the CLI's workspace directory.
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

/// The workspace directory the CLI announces in its session context
/// (`- **Workspace Directories:**\n  - /abs/path`), or a working directory
/// named in a text.
pub fn find_cwd(body: &Value) -> Option<PathBuf> {
    let texts = all_texts(body);
    for text in &texts {
        if let Some(at) = text.find("Workspace Directories:") {
            let rest = &text[at..];
            if let Some(dash) = rest.find("\n") {
                let line = rest[dash + 1..].trim_start();
                if let Some(path) = line.strip_prefix("- ") {
                    let path: String = path.chars().take_while(|c| !c.is_whitespace()).collect();
                    if path.starts_with('/') {
                        return Some(PathBuf::from(path));
                    }
                }
            }
        }
    }
    for marker in ["current working directory", "Working directory:", "cwd:"] {
        for text in &texts {
            if let Some(at) = text.find(marker) {
                let rest = &text[at + marker.len()..];
                if let Some(slash) = rest.find('/') {
                    let path: String = rest[slash..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && !"`'\"".contains(*c))
                        .collect();
                    return Some(PathBuf::from(path.trim_end_matches('.')));
                }
            }
        }
    }
    None
}

fn all_texts(body: &Value) -> Vec<&str> {
    let mut texts = Vec::new();
    if let Some(parts) = body
        .get("systemInstruction")
        .and_then(|s| s.get("parts"))
        .and_then(Value::as_array)
    {
        texts.extend(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str)),
        );
    }
    for content in body
        .get("contents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        texts.extend(
            content
                .get("parts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("text").and_then(Value::as_str)),
        );
    }
    texts
}

fn model_of(path: &str) -> Option<&str> {
    let after = &path[path.find("/models/")? + "/models/".len()..];
    Some(after.split(':').next().unwrap_or(after))
}

fn tool_names(body: &Value) -> Vec<String> {
    body.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|t| {
            t.get("functionDeclarations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|f| f.get("name").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

fn count_role(body: &Value, role: &str) -> usize {
    body.get("contents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c.get("role").and_then(Value::as_str) == Some(role))
        .count()
}

fn last_has_function_response(body: &Value) -> bool {
    body.get("contents")
        .and_then(Value::as_array)
        .and_then(|c| c.last())
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|p| p.get("functionResponse").is_some())
}

enum Part {
    Text(String),
    FunctionCall {
        name: String,
        args: Value,
    },
    /// Text streamed as this many chunks.
    ChunkedText(Vec<String>),
}

impl Part {
    fn to_json(&self) -> Value {
        match self {
            Part::Text(t) => json!({"text": t}),
            Part::ChunkedText(parts) => json!({"text": parts.concat()}),
            Part::FunctionCall { name, args } => {
                json!({"functionCall": {"name": name, "args": args}})
            }
        }
    }
}

struct Reply {
    parts: Vec<Part>,
}

impl Reply {
    fn text(text: &str) -> Self {
        Reply {
            parts: vec![Part::Text(text.to_string())],
        }
    }

    fn slow_text(chunks: usize) -> Self {
        let mut parts: Vec<String> = (1..=chunks.max(1))
            .map(|i| format!("Working slowly, step {i}.\n"))
            .collect();
        parts.push("\n## Summary\nFinished the slow answer.".into());
        Reply {
            parts: vec![Part::ChunkedText(parts)],
        }
    }

    fn response_json(&self, model: &str, id: &str) -> Value {
        let parts: Vec<Value> = self.parts.iter().map(Part::to_json).collect();
        chunk(model, id, parts, true)
    }

    /// The SSE events of this reply: text arrives in pieces (halves, or the
    /// slow chunks), function calls whole, and the last chunk carries
    /// `finishReason` and the full `usageMetadata`, as the real API does.
    fn sse_events(&self, model: &str, id: &str) -> Vec<Bytes> {
        let mut pieces: Vec<Value> = Vec::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => pieces.extend(halves(t).into_iter().map(|t| json!({"text": t}))),
                Part::ChunkedText(parts) => pieces.extend(parts.iter().map(|t| json!({"text": t}))),
                Part::FunctionCall { .. } => pieces.push(part.to_json()),
            }
        }
        let last = pieces.len().saturating_sub(1);
        pieces
            .into_iter()
            .enumerate()
            .map(|(i, piece)| sse(&chunk(model, id, vec![piece], i == last)))
            .collect()
    }
}

fn chunk(model: &str, id: &str, parts: Vec<Value>, last: bool) -> Value {
    let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
    let usage = if last {
        candidate["finishReason"] = json!("STOP");
        json!({
            "promptTokenCount": INPUT_TOKENS, "candidatesTokenCount": OUTPUT_TOKENS,
            "totalTokenCount": INPUT_TOKENS + OUTPUT_TOKENS,
        })
    } else {
        json!({"promptTokenCount": INPUT_TOKENS, "totalTokenCount": INPUT_TOKENS})
    };
    json!({
        "candidates": [candidate], "usageMetadata": usage,
        "modelVersion": model, "responseId": id,
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

fn sse(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\r\n\r\n"))
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
        .header(header::CONTENT_TYPE, "application/json; charset=UTF-8");
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

/// A `google.rpc.Status` error body, as the Gemini API sends it.
fn error_body(code: u16, status: &str, message: &str, details: Value) -> Value {
    json!({"error": {"code": code, "message": message, "status": status, "details": details}})
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase())
}
