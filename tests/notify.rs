//! Webhook notifications: a real receiver (axum on loopback) gets signed
//! JSON events from a real server as real tasks block, complete, fail or are
//! cancelled; retries, a hanging receiver and a wrong secret.

mod common;
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use claudomator::config::Config;
use claudomator::proto as pb;
use common::{
    Client, TestServer, agent_spec, spec, start_server_with, submit, wait_completed, wait_for,
};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use support::anthropic_mock::{AnthropicMock, Script};
use support::claude_env::{claude_or_skip, configure_claude};

const SECRET: &str = "notify-test-secret";

/// How the receiver answers.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Accept,
    /// 500 to the first `n` attempts of each delivery, then 200.
    FailFirst(usize),
    /// Never answers.
    Hang,
}

/// One POST as the receiver saw it.
#[derive(Clone, Debug)]
struct Received {
    event: String,
    delivery: String,
    signature: String,
    content_type: String,
    body: Bytes,
    json: Value,
    /// What the receiver answered; None while it hangs.
    status: Option<u16>,
}

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(behaviour: Behaviour) -> Receiver {
        let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
        let app = Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state((behaviour, seen.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// The accepted (2xx) deliveries of `event` about `task_id`.
    fn delivered(&self, event: &str, task_id: &str) -> Vec<Received> {
        self.seen()
            .into_iter()
            .filter(|r| {
                r.status == Some(200) && r.event == event && r.json["task"]["id"] == task_id
            })
            .collect()
    }

    /// Waits until `event` about `task_id` was accepted, and returns it.
    async fn wait_for(&self, event: &str, task_id: &str) -> Received {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(found) = self.delivered(event, task_id).pop() {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {event} for {task_id}; saw {:?}",
                self.seen()
                    .iter()
                    .map(|r| (&r.event, r.status))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(
    State((behaviour, seen)): State<(Behaviour, Arc<Mutex<Vec<Received>>>)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let delivery = header("x-claudomator-delivery");
    let status = match behaviour {
        Behaviour::Accept => Some(200),
        Behaviour::Hang => None,
        Behaviour::FailFirst(n) => {
            let earlier = seen
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.delivery == delivery)
                .count();
            Some(if earlier < n { 500 } else { 200 })
        }
    };
    seen.lock().unwrap().push(Received {
        event: header("x-claudomator-event"),
        delivery,
        signature: header("x-claudomator-signature-256"),
        content_type: header("content-type"),
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
        body,
        status,
    });
    match status {
        Some(code) => StatusCode::from_u16(code).unwrap(),
        None => std::future::pending().await,
    }
}

/// `sha256=<hex>` of `body` under `secret`, computed here with the hmac
/// crate, not with the server's own code.
fn signature_of(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Notifications to `receiver`; the executor on, with a `gemini` whose CLI
/// does not exist, so gemini tasks fail at once.
async fn server(receiver: &Receiver, adjust: impl FnOnce(&mut Config)) -> TestServer {
    let url = receiver.url();
    start_server_with(move |c| {
        c.notifications.url = url;
        c.notifications.secret = SECRET.into();
        c.notifications.retry_base = "10ms".into();
        c.executor.enabled = true;
        c.executor.poll_interval = "100ms".into();
        c.agents.gemini.command = "/nonexistent/gemini".into();
        adjust(c);
    })
    .await
}

fn gemini_spec(name: &str) -> pb::TaskSpec {
    pb::TaskSpec {
        name: name.into(),
        ..agent_spec(pb::AgentType::Gemini, "this agent is not installed")
    }
}

async fn failed_task(client: &mut Client, name: &str) -> pb::Task {
    let task = submit(client, gemini_spec(name)).await;
    wait_for(client, &task.id, &[pb::TaskState::Failed]).await
}

#[tokio::test]
async fn failed_tasks_are_notified_signed_and_a_wrong_secret_does_not_verify() {
    let receiver = Receiver::start(Behaviour::Accept).await;
    let server = server(&receiver, |_| {}).await;
    let mut client = server.client().await;

    let failed = failed_task(&mut client, "no agent").await;
    // A dependent of a failed task fails too: the executor's other path.
    let dependent = submit(
        &mut client,
        pb::TaskSpec {
            depends_on: vec![failed.id.clone()],
            ..spec("after the failed one")
        },
    )
    .await;
    wait_for(&mut client, &dependent.id, &[pb::TaskState::Failed]).await;

    for (task_id, reason) in [(&failed.id, "not installed"), (&dependent.id, "dependency")] {
        let got = receiver.wait_for("task.failed", task_id).await;
        assert_eq!(got.content_type, "application/json");
        assert_eq!(got.signature, signature_of(SECRET, &got.body));
        assert_ne!(
            got.signature,
            signature_of("another secret", &got.body),
            "a wrong secret does not verify"
        );
        assert!(!got.delivery.is_empty());
        let json = &got.json;
        assert_eq!(json["event"], "task.failed");
        assert_eq!(json["delivery_id"], got.delivery.as_str());
        assert_eq!(json["task"]["state"], "failed");
        assert_eq!(json["task"]["project"], "demo");
        assert!(
            json["task"]["reason"].as_str().unwrap().contains(reason),
            "{json}"
        );
        assert!(json["sent_at"].as_i64().unwrap() >= json["occurred_at"].as_i64().unwrap());
        assert!(json["task"]["question"].is_null());
    }
    let json = receiver.wait_for("task.failed", &failed.id).await.json;
    assert_eq!(json["task"]["name"], "no agent");
    assert_eq!(json["task"]["agent"], "gemini");
    assert_eq!(json["task"]["previous_state"], "running");
    // Not in the default event list: nothing was sent for the claim.
    assert!(receiver.seen().iter().all(|r| r.event == "task.failed"));
    assert_eq!(receiver.seen().len(), 2, "one delivery per event");
}

#[tokio::test]
async fn cancelled_tasks_are_notified_when_asked_for() {
    let receiver = Receiver::start(Behaviour::Accept).await;
    let server = server(&receiver, |c| {
        c.executor.enabled = false;
        c.notifications.events = vec!["cancelled".into()];
    })
    .await;
    let mut client = server.client().await;
    let task = submit(&mut client, spec("never runs")).await;
    client
        .cancel_task(pb::CancelTaskRequest {
            id: task.id.clone(),
            reason: "changed my mind".into(),
        })
        .await
        .unwrap();
    let got = receiver.wait_for("task.cancelled", &task.id).await;
    assert_eq!(got.signature, signature_of(SECRET, &got.body));
    assert_eq!(got.json["task"]["reason"], "changed my mind");
    assert_eq!(got.json["task"]["previous_state"], "queued");
    assert!(got.json["execution"].is_null(), "it never ran");
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_the_event_on_the_third_try() {
    let receiver = Receiver::start(Behaviour::FailFirst(2)).await;
    let server = server(&receiver, |_| {}).await;
    let mut client = server.client().await;
    let failed = failed_task(&mut client, "retried").await;
    receiver.wait_for("task.failed", &failed.id).await;

    let tries: Vec<Received> = receiver
        .seen()
        .into_iter()
        .filter(|r| r.json["task"]["id"] == failed.id.as_str())
        .collect();
    let statuses: Vec<Option<u16>> = tries.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(200)]);
    assert!(
        tries.iter().all(|r| r.delivery == tries[0].delivery),
        "one delivery id across retries"
    );
    for r in &tries {
        // Each try is stamped anew and signed anew.
        assert_eq!(r.signature, signature_of(SECRET, &r.body));
        assert_eq!(r.json["delivery_id"], tries[0].delivery.as_str());
    }
    let sent: Vec<i64> = tries
        .iter()
        .map(|r| r.json["sent_at"].as_i64().unwrap())
        .collect();
    assert!(sent.windows(2).all(|w| w[0] <= w[1]), "{sent:?}");
    let check = notify_check(&mut client, |c| count(c, " delivered") == 1).await;
    assert!(check.ok, "{check:?}");
    assert_eq!(count(&check, " delivered"), 1, "{check:?}");
}

/// The status report's `notifications` check, once `until` holds of it
/// (10 s at most).
async fn notify_check(
    client: &mut Client,
    until: impl Fn(&pb::ComponentCheck) -> bool,
) -> pb::ComponentCheck {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let check = client
            .get_system_status(pb::GetSystemStatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .notifications
            .unwrap();
        if until(&check) || Instant::now() > deadline {
            return check;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The count before `what` in a check's detail ("3 delivered, …").
fn count(check: &pb::ComponentCheck, what: &str) -> u64 {
    let before = check.detail.split(what).next().unwrap_or_default();
    let number = before
        .rsplit([' ', ','])
        .find(|w| !w.is_empty())
        .unwrap_or_default();
    number
        .parse()
        .unwrap_or_else(|_| panic!("no count of {what:?} in {:?}", check.detail))
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_is_given_up_on_and_the_status_says_so() {
    let receiver = Receiver::start(Behaviour::FailFirst(100)).await;
    let server = server(&receiver, |c| c.notifications.max_retries = 1).await;
    let mut client = server.client().await;
    let check = notify_check(&mut client, |_| true).await;
    assert!(check.ok, "nothing lost yet: {check:?}");
    assert_eq!(count(&check, " delivered"), 0);

    let failed = failed_task(&mut client, "lost").await;
    let check = notify_check(&mut client, |c| !c.ok).await;
    assert!(!check.ok, "{check:?}");
    assert_eq!(count(&check, " not delivered"), 1, "{check:?}");
    assert!(
        check.detail.contains(&failed.id) && check.detail.contains("500"),
        "the last failure names the task and the answer: {check:?}"
    );
    let tries = receiver
        .seen()
        .iter()
        .filter(|r| r.json["task"]["id"] == failed.id.as_str())
        .count();
    assert_eq!(tries, 2, "one try and one retry");
}

#[tokio::test]
async fn a_hanging_receiver_holds_no_task_back() {
    let receiver = Receiver::start(Behaviour::Hang).await;
    let mut server = server(&receiver, |c| {
        c.notifications.timeout = "1h".into();
        // A tiny queue: most of these events are dropped, none waited for.
        c.notifications.queue = 1;
    })
    .await;
    let mut client = server.client().await;

    let first = failed_task(&mut client, "first").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.seen().is_empty() {
        assert!(Instant::now() < deadline, "the first event never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The receiver holds that POST open; every later task still ends.
    let mut later = Vec::new();
    for i in 0..12 {
        later.push(submit(&mut client, gemini_spec(&format!("later {i}"))).await);
    }
    for task in &later {
        wait_for(&mut client, &task.id, &[pb::TaskState::Failed]).await;
    }
    let seen = receiver.seen();
    assert!(seen.iter().all(|r| r.status.is_none()), "it never answered");
    assert!(
        seen.iter()
            .any(|r| r.json["task"]["id"] == first.id.as_str())
    );
    let check = notify_check(&mut client, |_| true).await;
    assert!(!check.ok, "{check:?}");
    assert!(count(&check, " dropped") > 0, "{check:?}");
    // Shutting down does not wait for the hanging deliveries.
    server.stop().await;
}

/// A server whose `claude` talks to `mock`, with notifications to `receiver`.
async fn server_with_claude(receiver: &Receiver, mock: &AnthropicMock, home: &Path) -> TestServer {
    server(receiver, |c| configure_claude(c, &mock.base_url(), home, 1)).await
}

#[tokio::test]
async fn blocked_and_completed_tasks_are_notified_with_question_and_cost() {
    if claude_or_skip("blocked_and_completed_tasks_are_notified_with_question_and_cost").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let mock = AnthropicMock::start(Script::write_file(
        ".claudomator/question.json",
        r#"{"question": "Which database?", "choices": ["sqlite", "redis"]}"#,
    ));
    let receiver = Receiver::start(Behaviour::Accept).await;
    let server = server_with_claude(&receiver, &mock, home.path()).await;
    let mut client = server.client().await;

    let task = submit(
        &mut client,
        pb::TaskSpec {
            name: "cache".into(),
            ..agent_spec(pb::AgentType::Claude, "add a cache; ask which database")
        },
    )
    .await;
    wait_for(&mut client, &task.id, &[pb::TaskState::Blocked]).await;
    let blocked = receiver.wait_for("task.blocked", &task.id).await;
    assert_eq!(blocked.signature, signature_of(SECRET, &blocked.body));
    let json = &blocked.json;
    assert_eq!(json["task"]["question"]["text"], "Which database?");
    assert_eq!(json["task"]["question"]["choices"][1], "redis");
    assert_eq!(json["task"]["name"], "cache");
    assert_eq!(json["execution"]["state"], "blocked");

    client
        .answer_question(pb::AnswerQuestionRequest {
            task_id: task.id.clone(),
            answer: "sqlite".into(),
        })
        .await
        .unwrap();
    wait_completed(&mut client, &task.id).await;
    let completed = receiver.wait_for("task.completed", &task.id).await;
    assert_eq!(completed.signature, signature_of(SECRET, &completed.body));
    let json = &completed.json;
    assert_eq!(json["task"]["state"], "completed");
    assert!(json["task"]["question"].is_null());
    assert_eq!(json["execution"]["attempt"], 2);
    assert_eq!(json["execution"]["state"], "succeeded");
    assert!(
        json["execution"]["cost_usd"].as_f64().unwrap() > 0.0,
        "{json}"
    );
    assert_eq!(json["execution"]["agent"], "claude");
    assert_ne!(blocked.delivery, completed.delivery);
}
