//! gRPC-Web on the gRPC port, spoken over plain HTTP/1.1 the way a browser
//! does (reqwest, requests framed by hand: a 5-byte prefix and the protobuf
//! message; the status in the headers or in a trailer frame), and the CORS
//! check in front of it.

#[path = "support/chat_mock.rs"]
mod chat_mock;
mod common;
#[path = "support/http_thread.rs"]
mod http_thread;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use chat_mock::{ChatMock, Reply};
use claudomator::proto as pb;
use common::{agent_spec, spec, start_server, start_server_with, submit, wait_completed};
use prost::Message;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode, Version};

const TOKEN: &str = "web-token-0123";
const PAGE: &str = "http://localhost:5173";
const SERVICE: &str = "claudomator.v1.ClaudomatorService";

/// A gRPC-Web request body: one uncompressed message frame.
fn framed(message: &impl Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    body.extend_from_slice(&bytes);
    body
}

fn http1() -> reqwest::Client {
    reqwest::Client::builder()
        .http1_only()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// POSTs one gRPC-Web call (`service/method`) with `headers` (e.g. the
/// token, an `Origin`), over HTTP/1.1.
async fn post(
    addr: SocketAddr,
    path: &str,
    request: &impl Message,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut call = http1()
        .post(format!("http://{addr}/{path}"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("x-user-agent", "grpc-web-test")
        .body(framed(request));
    for (name, value) in headers {
        call = call.header(*name, *value);
    }
    let response = call.send().await.unwrap();
    assert_eq!(response.version(), Version::HTTP_11);
    response
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// A gRPC-Web response body, read frame by frame as it arrives.
struct Frames {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

#[derive(Debug)]
enum Frame {
    Message(Vec<u8>),
    /// The trailer frame: `grpc-status` and the others, lower-case names.
    Trailers(HashMap<String, String>),
}

impl Frames {
    fn new(response: reqwest::Response) -> Self {
        Frames {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next frame; None at the end of the body. 20 s at most.
    async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(Duration::from_secs(20), self.read())
            .await
            .expect("a gRPC-Web frame within 20 s")
    }

    async fn read(&mut self) -> Option<Frame> {
        loop {
            if self.buffer.len() >= 5 {
                let len = u32::from_be_bytes(self.buffer[1..5].try_into().unwrap()) as usize;
                if self.buffer.len() >= 5 + len {
                    let flags = self.buffer[0];
                    let payload: Vec<u8> = self.buffer.drain(..5 + len).skip(5).collect();
                    return Some(if flags & 0x80 != 0 {
                        Frame::Trailers(trailers(&payload))
                    } else {
                        assert_eq!(flags, 0, "an uncompressed message frame");
                        Frame::Message(payload)
                    });
                }
            }
            match self.response.chunk().await.unwrap() {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => {
                    assert!(self.buffer.is_empty(), "a cut frame: {:?}", self.buffer);
                    return None;
                }
            }
        }
    }

    async fn message<M: Message + Default>(&mut self) -> M {
        match self.next().await {
            Some(Frame::Message(bytes)) => M::decode(bytes.as_slice()).unwrap(),
            other => panic!("expected a message frame, got {other:?}"),
        }
    }

    /// The trailer frame, then the end of the body.
    async fn trailers(&mut self) -> HashMap<String, String> {
        let trailers = match self.next().await {
            Some(Frame::Trailers(t)) => t,
            other => panic!("expected the trailer frame, got {other:?}"),
        };
        assert!(self.next().await.is_none(), "nothing after the trailers");
        trailers
    }
}

fn trailers(block: &[u8]) -> HashMap<String, String> {
    String::from_utf8(block.to_vec())
        .unwrap()
        .split("\r\n")
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, value) = line.split_once(':').expect("name: value");
            (name.trim().to_ascii_lowercase(), value.trim().to_string())
        })
        .collect()
}

/// One unary call that succeeded: its only message, status 0 in the trailers.
async fn unary_ok<M: Message + Default>(response: reqwest::Response) -> M {
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/grpc-web+proto"
    );
    assert!(response.headers().get("grpc-status").is_none());
    let mut frames = Frames::new(response);
    let message = frames.message().await;
    let trailers = frames.trailers().await;
    assert_eq!(trailers["grpc-status"], "0", "{trailers:?}");
    message
}

/// A call refused before any message: the status in the headers (a
/// trailers-only answer) and an empty body. Returns (code, message).
async fn refused_call(response: reqwest::Response) -> (tonic::Code, String) {
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    let code: i32 = headers["grpc-status"].to_str().unwrap().parse().unwrap();
    let message = headers
        .get("grpc-message")
        .map(|m| m.to_str().unwrap().replace("%20", " "))
        .unwrap_or_default();
    let mut frames = Frames::new(response);
    assert!(
        frames.next().await.is_none(),
        "no message, no trailer frame"
    );
    (tonic::Code::from_i32(code), message)
}

fn path(method: &str) -> String {
    format!("{SERVICE}/{method}")
}

fn access_control(headers: &HeaderMap) -> Vec<String> {
    headers
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

/// A browser's preflight for a gRPC-Web call from `origin`.
async fn preflight(addr: SocketAddr, origin: &str) -> reqwest::Response {
    http1()
        .request(
            Method::OPTIONS,
            format!("http://{addr}/{}", path("ListTasks")),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,grpc-timeout,x-grpc-web,x-user-agent",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn unary_calls_over_grpc_web_take_the_same_bearer_token_as_grpc() {
    let server = start_server_with(|c| c.auth.tokens = vec![TOKEN.into()]).await;
    let submit_request = common::submit_request(spec("Fix the flaky test, from a browser"));

    let (code, message) =
        refused_call(post(server.addr, &path("SubmitTask"), &submit_request, &[]).await).await;
    assert_eq!(code, tonic::Code::Unauthenticated);
    assert!(message.contains("authorization"), "{message}");
    let (code, _) = refused_call(
        post(
            server.addr,
            &path("SubmitTask"),
            &submit_request,
            &[("authorization", "Bearer not-the-token")],
        )
        .await,
    )
    .await;
    assert_eq!(code, tonic::Code::Unauthenticated);

    let auth = bearer();
    let submitted: pb::SubmitTaskResponse = unary_ok(
        post(
            server.addr,
            &path("SubmitTask"),
            &submit_request,
            &[("authorization", &auth)],
        )
        .await,
    )
    .await;
    assert!(submitted.created);
    let task = submitted.task.unwrap();
    assert_eq!(task.state, pb::TaskState::Queued as i32);
    assert_eq!(
        task.spec.unwrap().instructions,
        "Fix the flaky test, from a browser"
    );

    let got: pb::GetTaskResponse = unary_ok(
        post(
            server.addr,
            &path("GetTask"),
            &pb::GetTaskRequest {
                id: task.id.clone(),
            },
            &[("authorization", &auth)],
        )
        .await,
    )
    .await;
    assert_eq!(got.task.unwrap().id, task.id);

    // A bad request is the same INVALID_ARGUMENT as over gRPC.
    let (code, message) = refused_call(
        post(
            server.addr,
            &path("GetTask"),
            &pb::GetTaskRequest { id: "nope".into() },
            &[("authorization", &auth)],
        )
        .await,
    )
    .await;
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");

    // Health needs no token, as over gRPC.
    let health: tonic_health::pb::HealthCheckResponse = unary_ok(
        post(
            server.addr,
            "grpc.health.v1.Health/Check",
            &tonic_health::pb::HealthCheckRequest::default(),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // gRPC (HTTP/2) still works on the same port, and sees the same task.
    let mut client = server.client().await;
    let mut request = tonic::Request::new(pb::GetTaskRequest {
        id: task.id.clone(),
    });
    request
        .metadata_mut()
        .insert("authorization", auth.parse().unwrap());
    let seen = client
        .get_task(request)
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(seen.id, task.id);

    // Plain HTTP/1.1 that is not gRPC-Web is refused.
    let plain = http1()
        .post(format!("http://{}/{}", server.addr, path("GetTask")))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn watch_tasks_streams_over_grpc_web_with_a_token() {
    let server = start_server_with(|c| c.auth.tokens = vec![TOKEN.into()]).await;
    let auth = bearer();
    let submitted: pb::SubmitTaskResponse = unary_ok(
        post(
            server.addr,
            &path("SubmitTask"),
            &common::submit_request(spec("Watched from a browser")),
            &[("authorization", &auth)],
        )
        .await,
    )
    .await;
    let task = submitted.task.unwrap();
    let watch = pb::WatchTasksRequest {
        task_ids: vec![task.id.clone()],
        ..Default::default()
    };

    let (code, _) = refused_call(post(server.addr, &path("WatchTasks"), &watch, &[]).await).await;
    assert_eq!(code, tonic::Code::Unauthenticated);

    let response = post(
        server.addr,
        &path("WatchTasks"),
        &watch,
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut frames = Frames::new(response);
    let first: pb::WatchTasksResponse = frames.message().await;
    match first.event {
        Some(pb::watch_tasks_response::Event::Snapshot(t)) => assert_eq!(t.id, task.id),
        other => panic!("expected the snapshot, got {other:?}"),
    }
    let end: pb::WatchTasksResponse = frames.message().await;
    assert!(
        matches!(
            end.event,
            Some(pb::watch_tasks_response::Event::SnapshotEnd(_))
        ),
        "{end:?}"
    );

    // A change made meanwhile arrives live on the open HTTP/1.1 response.
    let cancelled: pb::CancelTaskResponse = unary_ok(
        post(
            server.addr,
            &path("CancelTask"),
            &pb::CancelTaskRequest {
                id: task.id.clone(),
                reason: "not needed".into(),
            },
            &[("authorization", &auth)],
        )
        .await,
    )
    .await;
    assert_eq!(
        cancelled.task.unwrap().state,
        pb::TaskState::Cancelled as i32
    );
    loop {
        let next: pb::WatchTasksResponse = frames.message().await;
        match next.event {
            Some(pb::watch_tasks_response::Event::Heartbeat(_)) => continue,
            // Never the task's creation again: the snapshot had it.
            Some(pb::watch_tasks_response::Event::Change(change)) => {
                assert_eq!(change.task.unwrap().id, task.id);
                assert_eq!(change.from_state, pb::TaskState::Queued as i32);
                assert_eq!(change.to_state, pb::TaskState::Cancelled as i32);
                assert!(!next.cursor.is_empty());
                break;
            }
            other => panic!("expected the change, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn stream_logs_streams_a_run_over_grpc_web_to_its_trailers() {
    let answer = "First line of the answer.\nSecond line.\n\n## Summary\nTwo lines.";
    let mock = ChatMock::always(Reply::text(answer));
    let server = common::start_local_model_server(mock.endpoint(), |c| {
        c.local_model.max_tokens = 48;
    })
    .await;
    let mut client = server.client().await;
    let task = submit(
        &mut client,
        agent_spec(pb::AgentType::Local, "Answer in two lines."),
    )
    .await;
    wait_completed(&mut client, &task.id).await;

    // By task id, following: the whole log, then the end of the stream.
    let response = post(
        server.addr,
        &path("StreamLogs"),
        &pb::StreamLogsRequest {
            task_id: task.id.clone(),
            follow: true,
            ..Default::default()
        },
        &[],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut frames = Frames::new(response);
    let mut events = Vec::new();
    let trailers = loop {
        match frames.next().await.expect("frames until the trailers") {
            Frame::Message(bytes) => events.push(
                pb::StreamLogsResponse::decode(bytes.as_slice())
                    .unwrap()
                    .event
                    .unwrap(),
            ),
            Frame::Trailers(trailers) => break trailers,
        }
    };
    assert!(frames.next().await.is_none());
    assert_eq!(trailers["grpc-status"], "0", "{trailers:?}");
    let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, (0..events.len() as u64).collect::<Vec<_>>());
    let text: String = events
        .iter()
        .filter(|e| e.kind == pb::LogEventKind::Text as i32)
        .map(|e| {
            let payload: serde_json::Value = serde_json::from_str(&e.payload_json).unwrap();
            payload["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text, answer);

    // From an offset, by execution id: the rest of the same log.
    let execution_id = events[0].execution_id.clone();
    let from = events.len() as u64 - 2;
    let response = post(
        server.addr,
        &path("StreamLogs"),
        &pb::StreamLogsRequest {
            execution_id,
            from_offset: from,
            ..Default::default()
        },
        &[],
    )
    .await;
    let mut frames = Frames::new(response);
    let a: pb::StreamLogsResponse = frames.message().await;
    let b: pb::StreamLogsResponse = frames.message().await;
    assert_eq!(
        [a.event.unwrap().offset, b.event.unwrap().offset],
        [from, from + 1]
    );
    assert_eq!(frames.trailers().await["grpc-status"], "0");
}

#[tokio::test]
async fn cors_is_off_by_default() {
    let server = start_server().await;
    assert!(server.config.cors_origins.is_empty());

    let answer = preflight(server.addr, PAGE).await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert_eq!(access_control(answer.headers()), Vec::<String>::new());

    // A call from a page is refused too, with no CORS header.
    let answer = post(
        server.addr,
        &path("ListTasks"),
        &pb::ListTasksRequest::default(),
        &[("origin", PAGE)],
    )
    .await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert_eq!(access_control(answer.headers()), Vec::<String>::new());
    let reason = answer.text().await.unwrap();
    assert!(
        reason.contains(PAGE) && reason.contains("cors_origins"),
        "{reason}"
    );

    // Without Origin (not a browser) gRPC-Web works, with no CORS header.
    let answer = post(
        server.addr,
        &path("ListTasks"),
        &pb::ListTasksRequest::default(),
        &[],
    )
    .await;
    assert_eq!(access_control(answer.headers()), Vec::<String>::new());
    let listed: pb::ListTasksResponse = unary_ok(answer).await;
    assert!(listed.tasks.is_empty());
}

#[tokio::test]
async fn cors_lets_a_configured_origin_call_and_refuses_another() {
    let server = start_server_with(|c| {
        c.cors_origins = vec![PAGE.into()];
        c.auth.tokens = vec![TOKEN.into()];
    })
    .await;

    let answer = preflight(server.addr, PAGE).await;
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    let headers = answer.headers();
    assert_eq!(headers["access-control-allow-origin"], PAGE);
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let allowed = headers["access-control-allow-headers"].to_str().unwrap();
    for header in [
        "authorization",
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
    ] {
        assert!(
            allowed.split(", ").any(|h| h == header),
            "{header}: {allowed}"
        );
    }
    assert!(headers.contains_key("access-control-max-age"));

    // The call itself: its answer names the origin and exposes the status
    // headers, also when the status is in them (an error).
    let auth = bearer();
    let answer = post(
        server.addr,
        &path("ListTasks"),
        &pb::ListTasksRequest::default(),
        &[("origin", PAGE), ("authorization", &auth)],
    )
    .await;
    assert_eq!(answer.headers()["access-control-allow-origin"], PAGE);
    let exposed = |headers: &HeaderMap| {
        let exposed = headers["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .to_string();
        for header in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
            assert!(
                exposed.split(", ").any(|h| h == header),
                "{header}: {exposed}"
            );
        }
    };
    exposed(answer.headers());
    let _: pb::ListTasksResponse = unary_ok(answer).await;
    let answer = post(
        server.addr,
        &path("ListTasks"),
        &pb::ListTasksRequest::default(),
        &[("origin", PAGE)],
    )
    .await;
    assert_eq!(answer.headers()["access-control-allow-origin"], PAGE);
    exposed(answer.headers());
    assert_eq!(refused_call(answer).await.0, tonic::Code::Unauthenticated);

    // Another origin (another port is another origin) gets nothing.
    for other in ["http://localhost:5174", "https://evil.example"] {
        let answer = preflight(server.addr, other).await;
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{other}");
        assert_eq!(access_control(answer.headers()), Vec::<String>::new());
        let answer = post(
            server.addr,
            &path("ListTasks"),
            &pb::ListTasksRequest::default(),
            &[("origin", other), ("authorization", &auth)],
        )
        .await;
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{other}");
        assert_eq!(access_control(answer.headers()), Vec::<String>::new());
    }
}
