//! A scripted OpenAI-compatible `/chat/completions` server on
//! `127.0.0.1:0`, for fault injection into the local-model client, the
//! `local` runner, the classifier and the summary fallback. Same plumbing as
//! `openai_mock.rs` (axum on its own thread and runtime, so it works from
//! any test flavour); it stops when dropped, cutting open streams.
//!
//! Each `POST …/chat/completions` takes the next [`Reply`] of the script,
//! or the default one when the script is spent. `GET …/models` lists one
//! model. Every request is recorded; counters say how many chat calls came
//! and how many streams finished or were cut by the client.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri, header};
use serde_json::{Value, json};

use super::http_thread::HttpThread;

/// The model name the mock reports.
pub const MOCK_MODEL: &str = "mock-chat";
/// `prompt_tokens` it reports for every answer.
pub const PROMPT_TOKENS: u64 = 42;

/// What one chat call gets.
#[derive(Clone, Debug)]
pub enum Reply {
    /// This text: one delta per word when streamed, with usage (when asked
    /// with `include_usage`) of [`PROMPT_TOKENS`] in and one token per word
    /// out.
    Text(String),
    /// Like `Text`, streamed with `delay` before each word: long enough a
    /// stream to cancel.
    Slow { text: String, delay: Duration },
    /// An error status with an OpenAI-style body, and `Retry-After` when set.
    Status {
        status: u16,
        retry_after: Option<String>,
    },
    /// Never answers (the headers never come).
    Hang,
    /// A well-formed answer with no text.
    Empty,
    /// Streamed: one good delta, then a `data:` line that is not JSON.
    /// Whole: a body that is not JSON.
    Malformed,
    /// Streamed: two deltas, then the connection closes without an end.
    Truncated,
}

impl Reply {
    pub fn text(text: impl Into<String>) -> Self {
        Reply::Text(text.into())
    }

    pub fn status(status: u16, retry_after: Option<&str>) -> Self {
        Reply::Status {
            status,
            retry_after: retry_after.map(str::to_string),
        }
    }
}

/// One chat call as the mock saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
    pub at: Duration,
}

impl Recorded {
    pub fn stream(&self) -> bool {
        self.body["stream"].as_bool() == Some(true)
    }

    /// All message contents, joined.
    pub fn prompt(&self) -> String {
        self.body["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["content"].as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

struct Shared {
    script: Mutex<VecDeque<Reply>>,
    default: Reply,
    started: Instant,
    requests: Mutex<Vec<Recorded>>,
    chat_calls: AtomicUsize,
    streams_completed: AtomicUsize,
    streams_aborted: AtomicUsize,
    /// Streams open now and at most, by the `model` the request named.
    in_flight: Mutex<std::collections::HashMap<String, (usize, usize)>>,
}

pub struct ChatMock {
    server: HttpThread,
    shared: Arc<Shared>,
}

impl ChatMock {
    /// Answers `script` in order, then `default` for every later call.
    pub fn start(script: Vec<Reply>, default: Reply) -> Self {
        let shared = Arc::new(Shared {
            script: Mutex::new(script.into()),
            default,
            started: Instant::now(),
            requests: Mutex::new(Vec::new()),
            chat_calls: AtomicUsize::new(0),
            streams_completed: AtomicUsize::new(0),
            streams_aborted: AtomicUsize::new(0),
            in_flight: Mutex::new(std::collections::HashMap::new()),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = HttpThread::serve("chat-mock", app);
        ChatMock { server, shared }
    }

    /// Every call answers `reply`.
    pub fn always(reply: Reply) -> Self {
        ChatMock::start(Vec::new(), reply)
    }

    /// The most streamed answers that were open at once, by the `model`
    /// their requests named (servers told apart by the model they send).
    pub fn max_in_flight_by_model(&self) -> std::collections::BTreeMap<String, usize> {
        self.shared
            .in_flight
            .lock()
            .unwrap()
            .iter()
            .map(|(model, (_, most))| (model.clone(), *most))
            .collect()
    }

    /// `http://127.0.0.1:<port>/v1`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1", self.server.addr())
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn chat_calls(&self) -> usize {
        self.shared.chat_calls.load(Ordering::SeqCst)
    }

    pub fn streams_completed(&self) -> usize {
        self.shared.streams_completed.load(Ordering::SeqCst)
    }

    /// Streams the client went away from before their end.
    pub fn streams_aborted(&self) -> usize {
        self.shared.streams_aborted.load(Ordering::SeqCst)
    }

    /// Polls `cond` every 20 ms until it holds or `timeout` passes.
    pub async fn eventually(&self, timeout: Duration, cond: impl Fn(&ChatMock) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while !cond(self) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    pub fn shutdown(&mut self) {
        self.server.shutdown();
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let path = uri.path().trim_end_matches('/');
    if method == Method::GET && path.ends_with("/models") {
        return json_response(
            StatusCode::OK,
            &json!({"object": "list", "data": [{"id": MOCK_MODEL, "object": "model"}]}),
            None,
        );
    }
    if method != Method::POST || !path.ends_with("/chat/completions") {
        return json_response(StatusCode::NOT_FOUND, &error("no such route"), None);
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.chat_calls.fetch_add(1, Ordering::SeqCst);
    shared.requests.lock().unwrap().push(Recorded {
        path: path.to_string(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: body.clone(),
        at: shared.started.elapsed(),
    });
    let reply = shared
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| shared.default.clone());
    let stream = body["stream"].as_bool() == Some(true);
    let usage = body["stream_options"]["include_usage"].as_bool() == Some(true);
    match reply {
        Reply::Status {
            status,
            retry_after,
        } => json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &error(&format!("mock: status {status}")),
            retry_after,
        ),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            json_response(StatusCode::OK, &completion(""), None)
        }
        Reply::Malformed if !stream => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{\"choices\": [broken"))
            .unwrap(),
        Reply::Text(text) if !stream => json_response(StatusCode::OK, &completion(&text), None),
        Reply::Slow { text, .. } if !stream => {
            json_response(StatusCode::OK, &completion(&text), None)
        }
        Reply::Empty if !stream => json_response(StatusCode::OK, &completion(""), None),
        Reply::Truncated if !stream => json_response(StatusCode::OK, &completion("cut"), None),
        reply => sse(
            shared,
            reply,
            usage,
            body["model"].as_str().unwrap_or_default().to_string(),
        ),
    }
}

fn completion(text: &str) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "model": MOCK_MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": words(text).len(),
                  "total_tokens": PROMPT_TOKENS + words(text).len() as u64},
    })
}

/// Words with their following space, so deltas put back together give the text.
fn words(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(str::to_string).collect()
}

fn chunk(delta: Value, finish: Option<&str>) -> Bytes {
    let chunk = json!({
        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": MOCK_MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    Bytes::from(format!("data: {chunk}\n\n"))
}

/// A streamed reply: (bytes, delay before it) events, counted complete or
/// aborted by a guard the body owns.
fn sse(shared: Arc<Shared>, reply: Reply, usage: bool, model: String) -> Response<Body> {
    let (text, delay) = match &reply {
        Reply::Text(text) => (text.clone(), Duration::ZERO),
        Reply::Slow { text, delay } => (text.clone(), *delay),
        Reply::Malformed => ("fine so far".into(), Duration::ZERO),
        Reply::Truncated => ("cut short here".into(), Duration::ZERO),
        _ => (String::new(), Duration::ZERO),
    };
    let mut events: VecDeque<(Bytes, Duration)> = VecDeque::new();
    events.push_back((chunk(json!({"role": "assistant"}), None), Duration::ZERO));
    let pieces = words(&text);
    let count = pieces.len() as u64;
    for word in pieces {
        events.push_back((chunk(json!({"content": word}), None), delay));
    }
    match reply {
        Reply::Malformed => events.push_back((Bytes::from("data: {\"choices\": [oops\n\n"), delay)),
        Reply::Truncated => {}
        _ => {
            events.push_back((chunk(json!({}), Some("stop")), Duration::ZERO));
            if usage {
                let usage = json!({"id": "chatcmpl-mock", "choices": [], "model": MOCK_MODEL,
                    "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": count,
                              "total_tokens": PROMPT_TOKENS + count}});
                events.push_back((Bytes::from(format!("data: {usage}\n\n")), Duration::ZERO));
            }
            events.push_back((Bytes::from("data: [DONE]\n\n"), Duration::ZERO));
        }
    }
    {
        let mut in_flight = shared.in_flight.lock().unwrap();
        let (now, most) = in_flight.entry(model.clone()).or_default();
        *now += 1;
        *most = (*most).max(*now);
    }
    let guard = StreamGuard {
        shared,
        completed: false,
        model,
    };
    let body = futures_stream(events, guard);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap()
}

struct StreamGuard {
    shared: Arc<Shared>,
    completed: bool,
    model: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let counter = if self.completed {
            &self.shared.streams_completed
        } else {
            &self.shared.streams_aborted
        };
        counter.fetch_add(1, Ordering::SeqCst);
        if let Some((now, _)) = self.shared.in_flight.lock().unwrap().get_mut(&self.model) {
            *now -= 1;
        }
    }
}

/// The events as a body stream, sleeping before each as asked.
fn futures_stream(
    events: VecDeque<(Bytes, Duration)>,
    guard: StreamGuard,
) -> impl tokio_stream::Stream<Item = Result<Bytes, Infallible>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(1);
    tokio::spawn(async move {
        let mut guard = guard;
        for (bytes, delay) in events {
            if !delay.is_zero() {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            if tx.send(Ok(bytes)).await.is_err() {
                return;
            }
        }
        // Every event was handed over; dropping `tx` ends the body.
        guard.completed = true;
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn error(message: &str) -> Value {
    json!({"error": {"message": message, "type": "mock_error", "param": null, "code": null}})
}

fn json_response(status: StatusCode, body: &Value, retry_after: Option<String>) -> Response<Body> {
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(value) = retry_after {
        builder = builder.header(header::RETRY_AFTER, value);
    }
    builder.body(Body::from(body.to_string())).unwrap()
}
