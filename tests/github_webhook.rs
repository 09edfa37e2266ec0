//! The GitHub webhook shim over real HTTP, with real GitHub deliveries: the
//! recorded payloads of `@octokit/webhooks-examples` (installed by
//! scripts/install-webhook-examples, or by these tests on first use),
//! signed here with a test secret. Where a case needs a conclusion, branch or
//! commit no recording has (no recorded workflow_run failed), the test
//! changes that one field of a recorded payload and says so.

mod common;
mod support;

use support::chat_mock;
use support::webhook_examples::example;

use std::path::{Path, PathBuf};

use claudomator::config::Config;
use claudomator::proto as pb;
use common::{Client, TestServer, all_tasks, get, start_server_with, wait_completed};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "webhook-test-secret";

/// A recorded `event` delivery with this action (and conclusion, if given).
fn recorded(event: &str, action: &str, conclusion: Option<&str>) -> Value {
    example(event, |p| {
        p["action"] == action && conclusion.is_none_or(|c| p[event]["conclusion"] == c)
    })
}

fn signature_of(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Both example repositories map to projects: octo-org/octo-repo (the
/// workflow_run recordings) to `demo`, Codertocat/Hello-World (checks) to
/// `other`. The executor is off unless `adjust` turns it on.
async fn webhook_server(adjust: impl FnOnce(&mut Config)) -> TestServer {
    start_server_with(|c| {
        c.github.webhook_secret = SECRET.into();
        c.projects[0].github = Some("octo-org/octo-repo".into());
        c.projects[1].github = Some("https://github.com/Codertocat/Hello-World.git".into());
        adjust(c);
    })
    .await
}

/// An HTTP answer: status and JSON body.
struct Answer {
    status: u16,
    json: Value,
}

impl Answer {
    fn outcome(&self) -> &str {
        self.json["outcome"].as_str().unwrap_or_default()
    }

    fn message(&self) -> &str {
        self.json["message"].as_str().unwrap_or_default()
    }

    fn task_id(&self) -> &str {
        self.json["task_id"].as_str().unwrap_or_default()
    }
}

/// A POST to the shim with these headers and body.
async fn post(server: &TestServer, headers: &[(&str, String)], body: Vec<u8>) -> Answer {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}/webhooks/github", server.http_addr))
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("the shim answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text}"));
    Answer { status, json }
}

/// Sends `payload` as GitHub does: JSON, signed, with event and delivery id.
async fn deliver_as(server: &TestServer, event: &str, payload: &Value, delivery: &str) -> Answer {
    let body = serde_json::to_vec(payload).unwrap();
    let headers = [
        ("content-type", "application/json".to_string()),
        ("x-github-event", event.to_string()),
        ("x-github-delivery", delivery.to_string()),
        ("x-hub-signature-256", signature_of(SECRET, &body)),
        ("user-agent", "GitHub-Hookshot/test".to_string()),
    ];
    post(server, &headers, body).await
}

async fn deliver(server: &TestServer, event: &str, payload: &Value) -> Answer {
    deliver_as(server, event, payload, &ulid::Ulid::new().to_string()).await
}

/// The recorded successful workflow_run, changed to this conclusion, branch
/// and commit.
fn workflow_run(conclusion: &str, branch: &str, sha: &str, committed_at: &str) -> Value {
    let mut payload = recorded("workflow_run", "completed", Some("success"));
    let run = &mut payload["workflow_run"];
    run["conclusion"] = json!(conclusion);
    run["head_branch"] = json!(branch);
    run["head_sha"] = json!(sha);
    run["head_commit"]["id"] = json!(sha);
    run["head_commit"]["timestamp"] = json!(committed_at);
    payload
}

fn sha(n: u8) -> String {
    format!("{n:02x}").repeat(20)
}

async fn task_count(server: &TestServer) -> usize {
    all_tasks(&mut server.client().await).await.len()
}

#[tokio::test]
async fn failing_runs_become_one_triage_task_each_and_the_rest_is_acknowledged() {
    let server = webhook_server(|_| {}).await;
    let mut client = server.client().await;

    // ping, as recorded.
    let ping = deliver(&server, "ping", &example("ping", |_| true)).await;
    assert_eq!((ping.status, ping.outcome()), (200, "pong"));

    // workflow_run, each failing conclusion (the recordings only passed).
    for (i, conclusion) in ["failure", "timed_out", "startup_failure"]
        .iter()
        .enumerate()
    {
        let branch = format!("fix-{conclusion}");
        let payload = workflow_run(conclusion, &branch, &sha(i as u8), "2020-10-05T16:32:07Z");
        let answer = deliver(&server, "workflow_run", &payload).await;
        assert_eq!(answer.status, 201, "{conclusion}: {}", answer.json);
        assert_eq!(answer.outcome(), "created");
        let task = get(&mut client, answer.task_id()).await;
        let spec = task.spec.unwrap();
        assert_eq!(spec.project, "demo");
        assert!(spec.tags.contains(&"ci".to_string()), "{:?}", spec.tags);
        assert_eq!(spec.base_ref, sha(i as u8), "it runs on the failing commit");
        assert!(spec.name.contains(conclusion), "{}", spec.name);
        for fact in [
            "octo-org/octo-repo",
            branch.as_str(),
            sha(i as u8).as_str(),
            "Workflow: test",
            conclusion,
            "https://github.com/octo-org/octo-repo/actions/runs/289782451",
            "## Triage plan",
            "Reproduce",
        ] {
            assert!(
                spec.instructions.contains(fact),
                "{fact} missing:\n{}",
                spec.instructions
            );
        }
    }

    // Passing and other conclusions, and other actions: acknowledged.
    let success = recorded("workflow_run", "completed", Some("success"));
    let answer = deliver(&server, "workflow_run", &success).await;
    assert_eq!(
        (answer.status, answer.outcome()),
        (200, "passed"),
        "{}",
        answer.json
    );
    let mut cancelled = workflow_run("cancelled", "main", &sha(9), "2020-10-05T16:32:07Z");
    cancelled["workflow_run"]["conclusion"] = json!("cancelled");
    let answer = deliver(&server, "workflow_run", &cancelled).await;
    assert_eq!((answer.status, answer.outcome()), (200, "ignored"));
    assert!(
        answer.message().contains("cancelled"),
        "{}",
        answer.message()
    );
    let requested = recorded("workflow_run", "requested", None);
    let answer = deliver(&server, "workflow_run", &requested).await;
    assert_eq!((answer.status, answer.outcome()), (200, "ignored"));
    assert!(
        answer.message().contains("requested"),
        "{}",
        answer.message()
    );

    // check_suite: recorded success passes; the same suite failing is triaged.
    let suite = example("check_suite", |p| {
        p["action"] == "completed" && p["check_suite"]["app"]["slug"].is_null()
    });
    let answer = deliver(&server, "check_suite", &suite).await;
    assert_eq!(
        (answer.status, answer.outcome()),
        (200, "passed"),
        "{}",
        answer.json
    );
    let mut failing_suite = suite.clone();
    failing_suite["check_suite"]["conclusion"] = json!("failure");
    let answer = deliver(&server, "check_suite", &failing_suite).await;
    assert_eq!(
        (answer.status, answer.outcome()),
        (201, "created"),
        "{}",
        answer.json
    );
    let task = get(&mut client, answer.task_id()).await;
    let spec = task.spec.unwrap();
    assert_eq!(spec.project, "other");
    assert!(
        spec.instructions.contains("Pull request: #2"),
        "{}",
        spec.instructions
    );
    let answer = deliver(
        &server,
        "check_suite",
        &recorded("check_suite", "requested", None),
    )
    .await;
    assert_eq!((answer.status, answer.outcome()), (200, "ignored"));

    // check_run: the recorded failure is a GitHub Actions check, which comes
    // as workflow_run too: not triaged twice.
    let actions_failure = recorded("check_run", "completed", Some("failure"));
    let answer = deliver(&server, "check_run", &actions_failure).await;
    assert_eq!(
        (answer.status, answer.outcome()),
        (200, "ignored"),
        "{}",
        answer.json
    );
    assert!(
        answer.message().contains("github-actions"),
        "{}",
        answer.message()
    );
    // Another app's check run, recorded passing, then failing.
    let other_app = example("check_run", |p| {
        p["action"] == "completed" && p["check_run"]["app"]["slug"].is_null()
    });
    let answer = deliver(&server, "check_run", &other_app).await;
    assert_eq!(
        (answer.status, answer.outcome()),
        (200, "passed"),
        "{}",
        answer.json
    );
    let mut failing_run = other_app.clone();
    failing_run["check_run"]["conclusion"] = json!("failure");
    failing_run["check_run"]["output"]["summary"] = json!("3 lint errors in src/main.rs");
    let answer = deliver(&server, "check_run", &failing_run).await;
    assert_eq!(
        (answer.status, answer.outcome()),
        (201, "created"),
        "{}",
        answer.json
    );
    let spec = get(&mut client, answer.task_id()).await.spec.unwrap();
    assert!(
        spec.instructions.contains("3 lint errors"),
        "{}",
        spec.instructions
    );
    assert!(
        spec.instructions.contains("Job: Octocoders-linter"),
        "{}",
        spec.instructions
    );
    let answer = deliver(
        &server,
        "check_run",
        &recorded("check_run", "created", None),
    )
    .await;
    assert_eq!((answer.status, answer.outcome()), (200, "ignored"));

    // Events the shim does not handle.
    let answer = deliver(&server, "push", &example("push", |_| true)).await;
    assert_eq!((answer.status, answer.outcome()), (200, "ignored"));
    assert!(answer.message().contains("push"), "{}", answer.message());

    let tasks = all_tasks(&mut client).await;
    assert_eq!(
        tasks.len(),
        5,
        "three workflow runs, one suite, one check run"
    );
    for task in &tasks {
        assert_eq!(task.state, pb::TaskState::Queued as i32);
    }
}

#[tokio::test]
async fn bad_signatures_are_refused_and_change_nothing() {
    let server = webhook_server(|_| {}).await;
    let payload = workflow_run("failure", "main", &sha(1), "2020-10-05T16:32:07Z");
    let body = serde_json::to_vec(&payload).unwrap();
    let headers = |signature: Option<String>| {
        let mut h = vec![
            ("content-type", "application/json".to_string()),
            ("x-github-event", "workflow_run".to_string()),
            ("x-github-delivery", "d-1".to_string()),
        ];
        if let Some(s) = signature {
            h.push(("x-hub-signature-256", s));
        }
        h
    };
    let mut changed = body.clone();
    *changed.last_mut().unwrap() = b' ';
    for (case, signature, body) in [
        ("missing", None, body.clone()),
        (
            "wrong secret",
            Some(signature_of("not the secret", &body)),
            body.clone(),
        ),
        ("body changed", Some(signature_of(SECRET, &body)), changed),
        ("not hex", Some("sha256=zz".to_string()), body.clone()),
        ("sha1", Some("sha1=0123".to_string()), body.clone()),
    ] {
        let answer = post(&server, &headers(signature), body).await;
        assert_eq!(answer.status, 401, "{case}: {}", answer.json);
        assert!(
            answer.message().contains("X-Hub-Signature-256"),
            "{case}: {}",
            answer.message()
        );
    }
    assert_eq!(task_count(&server).await, 0);
}

#[tokio::test]
async fn without_a_secret_deliveries_are_refused_unless_unsigned_ones_are_allowed() {
    let payload = workflow_run("failure", "main", &sha(1), "2020-10-05T16:32:07Z");
    let unsigned = |payload: &Value| {
        (
            vec![
                ("content-type", "application/json".to_string()),
                ("x-github-event", "workflow_run".to_string()),
            ],
            serde_json::to_vec(payload).unwrap(),
        )
    };
    let refusing = webhook_server(|c| c.github.webhook_secret.clear()).await;
    let (headers, body) = unsigned(&payload);
    let answer = post(&refusing, &headers, body).await;
    assert_eq!(answer.status, 403, "{}", answer.json);
    assert!(
        answer.message().contains("webhook_secret"),
        "{}",
        answer.message()
    );
    assert_eq!(task_count(&refusing).await, 0);

    let local = webhook_server(|c| {
        c.github.webhook_secret.clear();
        c.github.allow_unsigned = true;
    })
    .await;
    let (headers, body) = unsigned(&payload);
    let answer = post(&local, &headers, body).await;
    assert_eq!(
        (answer.status, answer.outcome()),
        (201, "created"),
        "{}",
        answer.json
    );
}

#[tokio::test]
async fn a_replayed_delivery_or_a_repeated_failure_names_the_existing_task() {
    let server = webhook_server(|_| {}).await;
    let payload = workflow_run("failure", "main", &sha(1), "2020-10-05T16:32:07Z");
    let first = deliver_as(&server, "workflow_run", &payload, "delivery-1").await;
    assert_eq!(first.status, 201, "{}", first.json);
    // GitHub's "Redeliver": the same delivery again.
    let replay = deliver_as(&server, "workflow_run", &payload, "delivery-1").await;
    assert_eq!(
        (replay.status, replay.outcome()),
        (200, "duplicate"),
        "{}",
        replay.json
    );
    assert_eq!(replay.task_id(), first.task_id());
    assert!(
        replay.message().contains(first.task_id()),
        "{}",
        replay.message()
    );
    // The same failure in another delivery (a re-run, another hook).
    let again = deliver_as(&server, "workflow_run", &payload, "delivery-2").await;
    assert_eq!((again.status, again.outcome()), (200, "duplicate"));
    assert_eq!(again.task_id(), first.task_id());
    assert_eq!(task_count(&server).await, 1);
}

#[tokio::test]
async fn an_unknown_repository_is_acknowledged_and_creates_nothing() {
    let server = webhook_server(|_| {}).await;
    let mut payload = workflow_run("failure", "main", &sha(1), "2020-10-05T16:32:07Z");
    payload["repository"]["full_name"] = json!("someone/else");
    let answer = deliver(&server, "workflow_run", &payload).await;
    assert_eq!(
        (answer.status, answer.outcome()),
        (200, "ignored"),
        "{}",
        answer.json
    );
    assert!(
        answer.message().contains("someone/else"),
        "{}",
        answer.message()
    );
    assert_eq!(task_count(&server).await, 0);
}

#[tokio::test]
async fn bad_bodies_get_a_clear_4xx() {
    let server = webhook_server(|c| c.github.max_body_bytes = 64 * 1024).await;
    let signed = |content_type: &str, event: &str, body: &[u8]| {
        vec![
            ("content-type", content_type.to_string()),
            ("x-github-event", event.to_string()),
            ("x-hub-signature-256", signature_of(SECRET, body)),
        ]
    };
    // Over the limit: a real payload padded past 64 KiB.
    let mut big = workflow_run("failure", "main", &sha(1), "2020-10-05T16:32:07Z");
    big["padding"] = json!("x".repeat(70 * 1024));
    let body = serde_json::to_vec(&big).unwrap();
    let answer = post(
        &server,
        &signed("application/json", "workflow_run", &body),
        body,
    )
    .await;
    assert_eq!(answer.status, 413, "{}", answer.json);
    assert!(
        answer.message().contains("max_body_bytes"),
        "{}",
        answer.message()
    );

    let body = b"{\"action\": \"completed\", ".to_vec();
    let answer = post(
        &server,
        &signed("application/json", "workflow_run", &body),
        body,
    )
    .await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.message().contains("not valid JSON"),
        "{}",
        answer.message()
    );

    let body = b"payload".to_vec();
    let answer = post(&server, &signed("text/plain", "workflow_run", &body), body).await;
    assert_eq!(answer.status, 415);
    assert!(
        answer.message().contains("text/plain"),
        "{}",
        answer.message()
    );

    let body = serde_json::to_vec(&big["repository"]).unwrap();
    let answer = post(&server, &signed("application/json", "", &body), body).await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.message().contains("X-GitHub-Event"),
        "{}",
        answer.message()
    );

    let mut no_sha = workflow_run("failure", "main", "", "2020-10-05T16:32:07Z");
    no_sha["workflow_run"]["head_sha"] = json!(null);
    let answer = deliver(&server, "workflow_run", &no_sha).await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.message().contains("head_sha"),
        "{}",
        answer.message()
    );
    assert_eq!(task_count(&server).await, 0);

    // GitHub's other content type: form-encoded, JSON in `payload`.
    let payload = workflow_run("failure", "main", &sha(2), "2020-10-05T16:32:07Z");
    let json = serde_json::to_string(&payload).unwrap();
    let mut body = b"payload=".to_vec();
    for byte in json.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => body.push(byte),
            b' ' => body.push(b'+'),
            other => body.extend(format!("%{other:02X}").bytes()),
        }
    }
    let headers = signed("application/x-www-form-urlencoded", "workflow_run", &body);
    let answer = post(&server, &headers, body).await;
    assert_eq!(
        (answer.status, answer.outcome()),
        (201, "created"),
        "{}",
        answer.json
    );
}

#[tokio::test]
async fn triage_is_capped_per_branch_and_workflow() {
    let server = webhook_server(|c| c.github.max_triage = 2).await;
    // Three failures on one branch, each an older commit than the last (a
    // re-run of history), so none makes another stale.
    let times = [
        "2020-10-05T16:00:00Z",
        "2020-10-04T16:00:00Z",
        "2020-10-03T16:00:00Z",
    ];
    let mut answers = Vec::new();
    for (i, at) in times.iter().enumerate() {
        let payload = workflow_run("failure", "main", &sha(i as u8), at);
        answers.push(deliver(&server, "workflow_run", &payload).await);
    }
    assert_eq!(answers[0].status, 201);
    assert_eq!(answers[1].status, 201);
    assert_eq!(
        (answers[2].status, answers[2].outcome()),
        (200, "capped"),
        "{}",
        answers[2].json
    );
    assert!(
        answers[2].message().contains("max_triage"),
        "{}",
        answers[2].message()
    );
    // Another branch has its own allowance.
    let payload = workflow_run("failure", "other-branch", &sha(7), times[0]);
    assert_eq!(deliver(&server, "workflow_run", &payload).await.status, 201);
    assert_eq!(task_count(&server).await, 3);
}

/// `count` failing runs of one workflow on one branch, each a commit of its
/// own, all made at the same time (so none makes another stale), delivered
/// at once to these servers in turn. Returns how many of each outcome.
async fn burst(servers: &[&TestServer], count: u8) -> std::collections::BTreeMap<String, usize> {
    let mut deliveries = tokio::task::JoinSet::new();
    for n in 0..count {
        let server = servers[n as usize % servers.len()];
        let url = format!("http://{}/webhooks/github", server.http_addr);
        let payload = workflow_run("failure", "main", &sha(n), "2020-10-05T16:00:00Z");
        deliveries.spawn(async move {
            let body = serde_json::to_vec(&payload).unwrap();
            let answer = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .header("x-github-event", "workflow_run")
                .header("x-github-delivery", ulid::Ulid::new().to_string())
                .header("x-hub-signature-256", signature_of(SECRET, &body))
                .body(body)
                .send()
                .await
                .expect("the shim answers");
            let status = answer.status().as_u16();
            let json: Value = answer.json().await.unwrap();
            format!("{status} {}", json["outcome"].as_str().unwrap_or_default())
        });
    }
    let mut outcomes = std::collections::BTreeMap::new();
    while let Some(outcome) = deliveries.join_next().await {
        *outcomes.entry(outcome.unwrap()).or_insert(0) += 1;
    }
    outcomes
}

/// A local model that takes a moment to write each plan, so a burst of
/// deliveries all pass the triage's first look at the cap before any of
/// them submits: only the store's one-step count holds the cap then.
fn slow_planner() -> chat_mock::ChatMock {
    chat_mock::ChatMock::always(chat_mock::Reply::Slow {
        text: "- Look at the failing test first.".into(),
        delay: std::time::Duration::from_millis(50),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_triage_cap_holds_under_a_hundred_concurrent_deliveries() {
    let model = slow_planner();
    let server = webhook_server(|c| {
        c.github.max_triage = 3;
        c.local_model.endpoint = model.endpoint();
    })
    .await;
    let outcomes = burst(&[&server], 100).await;
    assert_eq!(
        outcomes,
        [
            ("201 created".to_string(), 3),
            ("200 capped".to_string(), 97)
        ]
        .into(),
        "exactly max_triage tasks, the rest capped"
    );
    assert_eq!(task_count(&server).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_triage_cap_holds_across_two_servers_on_one_postgresql() {
    let database = common::postgres_database().await;
    let model = slow_planner();
    let endpoint = model.endpoint();
    let first = {
        let (database, endpoint) = (database.clone(), endpoint.clone());
        webhook_server(move |c| {
            c.github.max_triage = 3;
            c.local_model.endpoint = endpoint;
            c.database_url = database;
            c.executor.server_id = "first".into();
        })
        .await
    };
    let second = webhook_server(move |c| {
        c.github.max_triage = 3;
        c.local_model.endpoint = endpoint;
        c.database_url = database;
        c.executor.server_id = "second".into();
    })
    .await;
    let outcomes = burst(&[&first, &second], 100).await;
    assert_eq!(
        outcomes,
        [
            ("201 created".to_string(), 3),
            ("200 capped".to_string(), 97)
        ]
        .into(),
        "exactly max_triage tasks over both servers, the rest capped"
    );
    assert_eq!(task_count(&first).await, 3);
    assert_eq!(task_count(&second).await, 3);
}

#[tokio::test]
async fn a_newer_commit_failing_or_passing_cancels_the_older_waiting_triage() {
    let server = webhook_server(|_| {}).await;
    let mut client = server.client().await;
    let a = deliver(
        &server,
        "workflow_run",
        &workflow_run("failure", "main", &sha(1), "2020-10-05T10:00:00Z"),
    )
    .await;
    // Another workflow on the same branch is not about the same failure.
    let mut lint = workflow_run("failure", "main", &sha(1), "2020-10-05T10:00:00Z");
    lint["workflow_run"]["name"] = json!("lint");
    let lint = deliver(&server, "workflow_run", &lint).await;
    assert_eq!(lint.status, 201);

    // A newer commit fails too: its task replaces the older one.
    let b = deliver(
        &server,
        "workflow_run",
        &workflow_run("failure", "main", &sha(2), "2020-10-05T11:00:00Z"),
    )
    .await;
    assert_eq!(b.status, 201, "{}", b.json);
    assert_eq!(b.json["cancelled"], json!([a.task_id()]));
    let old = get(&mut client, a.task_id()).await;
    assert_eq!(old.state, pb::TaskState::Cancelled as i32);
    assert!(old.state_reason.contains("stale"), "{}", old.state_reason);
    assert!(
        old.state_reason.contains(&sha(2)[..7]),
        "{}",
        old.state_reason
    );

    // An older commit's late failure cancels nothing.
    let late = deliver(
        &server,
        "workflow_run",
        &workflow_run("failure", "main", &sha(3), "2020-10-05T09:00:00Z"),
    )
    .await;
    assert_eq!(late.status, 201);
    assert!(late.json["cancelled"].is_null(), "{}", late.json);

    // A newer commit passes: the waiting triage tasks of older ones go.
    let passed = deliver(
        &server,
        "workflow_run",
        &workflow_run("success", "main", &sha(4), "2020-10-05T12:00:00Z"),
    )
    .await;
    assert_eq!((passed.status, passed.outcome()), (200, "passed"));
    let mut gone: Vec<&str> = passed.json["cancelled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    gone.sort();
    let mut expected = vec![b.task_id(), late.task_id()];
    expected.sort();
    assert_eq!(gone, expected);
    let lint = get(&mut client, lint.task_id()).await;
    assert_eq!(lint.state, pb::TaskState::Queued as i32, "another workflow");
}

#[tokio::test]
async fn the_local_model_writes_the_plan_and_a_silent_one_falls_back() {
    let model = chat_mock::ChatMock::always(chat_mock::Reply::text(
        "- Look at the failing assertion in tests/api.rs first.",
    ));
    let server = webhook_server(|c| c.local_model.endpoint = model.endpoint()).await;
    let mut client = server.client().await;
    let payload = workflow_run("failure", "main", &sha(1), "2020-10-05T16:32:07Z");
    let answer = deliver(&server, "workflow_run", &payload).await;
    assert_eq!(answer.status, 201, "{}", answer.json);
    assert!(
        answer.message().contains("local model"),
        "{}",
        answer.message()
    );
    let spec = get(&mut client, answer.task_id()).await.spec.unwrap();
    assert!(
        spec.instructions
            .contains("failing assertion in tests/api.rs"),
        "{}",
        spec.instructions
    );
    assert!(
        model
            .requests()
            .iter()
            .any(|r| r.prompt().contains("octo-org/octo-repo"))
    );

    let silent = chat_mock::ChatMock::always(chat_mock::Reply::Hang);
    let server = webhook_server(|c| {
        c.local_model.endpoint = silent.endpoint();
        c.github.plan_timeout = "1s".into();
    })
    .await;
    let mut client = server.client().await;
    let answer = deliver(&server, "workflow_run", &payload).await;
    assert_eq!(answer.status, 201, "{}", answer.json);
    assert!(
        answer.message().contains("template"),
        "{}",
        answer.message()
    );
    let spec = get(&mut client, answer.task_id()).await.spec.unwrap();
    assert!(
        spec.instructions.contains("Likely causes"),
        "{}",
        spec.instructions
    );
}

#[tokio::test]
async fn healthz_answers() {
    let server = webhook_server(|_| {}).await;
    let response = reqwest::get(format!("http://{}/healthz", server.http_addr))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

/// `git -C dir args…`, its output.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A commit on a new branch `branch` of `repo`, leaving `trunk` checked out.
fn commit_on_branch(repo: &Path, branch: &str, file: &str) -> String {
    git(repo, &["checkout", "-q", "-b", branch]);
    std::fs::write(repo.join(file), "fn broken() {}\n").unwrap();
    git(repo, &["add", file]);
    git(
        repo,
        &[
            "-c",
            "user.name=dev",
            "-c",
            "user.email=dev@example.com",
            "commit",
            "-q",
            "-m",
            "break the build",
        ],
    );
    let sha = git(repo, &["rev-parse", "HEAD"]);
    git(repo, &["checkout", "-q", "trunk"]);
    sha
}

#[tokio::test]
async fn a_failing_workflow_run_becomes_a_task_the_executor_runs_on_that_commit() {
    if support::claude_env::claude_or_skip(
        "a_failing_workflow_run_becomes_a_task_the_executor_runs_on_that_commit",
    )
    .is_none()
    {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let mock = support::anthropic_mock::AnthropicMock::start(
        support::anthropic_mock::Script::write_file("FIXED.md", "fixed"),
    );
    let server = webhook_server(|c| {
        c.executor.enabled = true;
        c.executor.poll_interval = "200ms".into();
        c.github.agent = claudomator::core::model::AgentType::Claude;
        support::claude_env::configure_claude(c, &mock.base_url(), home.path(), 1);
    })
    .await;
    let project: PathBuf = server.config.projects[0].path.clone();
    let failing = commit_on_branch(&project, "feature-x", "broken.rs");

    let payload = workflow_run("failure", "feature-x", &failing, "2020-10-05T16:32:07Z");
    let answer = deliver(&server, "workflow_run", &payload).await;
    assert_eq!(answer.status, 201, "{}", answer.json);

    let mut client: Client = server.client().await;
    let done = wait_completed(&mut client, answer.task_id()).await;
    let spec = done.spec.unwrap();
    assert!(spec.tags.contains(&"ci".to_string()));
    // The agent got the triage instructions...
    assert!(
        mock.message_requests().iter().any(|r| r
            .messages()
            .iter()
            .any(|m| m.to_string().contains("feature-x"))),
        "the prompt names the branch"
    );
    // ...and worked on the failing commit: its branch grows from it.
    let branch = format!("claudomator/{}", answer.task_id());
    git(
        &project,
        &["merge-base", "--is-ancestor", &failing, &branch],
    );
    assert_eq!(
        git(&project, &["show", &format!("{branch}:FIXED.md")]),
        "fixed"
    );
    assert_eq!(
        git(&project, &["show", &format!("{branch}:broken.rs")]),
        "fn broken() {}"
    );
}
