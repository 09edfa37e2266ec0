//! How fast a pull request's review reaches its agent: from the webhook
//! delivery of a review requesting changes to the resumed agent process
//! starting, beside a plain `SubmitTask` to its agent process starting, in
//! the same run on the same server. Prints p50/p99 of each and the ratio
//! (target: within 1.2x); asserts nothing.
//!
//! The server runs in this process with the real `claude` CLI (against the
//! scripted Anthropic server) behind a wrapper script that notes when it
//! starts, and an in-memory code host (`FakeHost`) with a local bare
//! repository as the remote, so GitHub's own latency is not in the figures
//! (the review path's git fetch into the sandbox and the permission check
//! are). Each delivery is signed as GitHub signs it.
//!
//! `cargo bench --bench pull_feedback` (BENCH_DELIVERIES, default 50).

#[path = "../tests/support/anthropic_mock.rs"]
mod anthropic_mock;
#[path = "../tests/support/claude_env.rs"]
mod claude_env;
#[path = "../tests/support/http_thread.rs"]
mod http_thread;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anthropic_mock::{AnthropicMock, Script};
use claudomator::config::{Config, ProjectConfig};
use claudomator::core::codehost::{CodeHost, CodeHosts, Permission, RepoName};
use claudomator::core::model::PullMode;
use claudomator::core::pulls::fake::FakeHost;
use claudomator::core::runner::Isolation;
use claudomator::proto as pb;
use claudomator::proto::claudomator_service_client::ClaudomatorServiceClient;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

const SECRET: &str = "bench-secret";
const REPO: &str = "octo/bench";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=b", "-c", "user.email=b@example.com"])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Waits for the wrapper's next start line after `seen` lines; its time.
async fn next_start(starts: &Path, seen: usize) -> u128 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(starts).unwrap_or_default();
        if let Some(line) = text.lines().nth(seen) {
            return line.trim().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "the agent did not start");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn wait_ready(client: &mut ClaudomatorServiceClient<tonic::transport::Channel>, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let task = client
            .get_task(pb::GetTaskRequest { id: id.into() })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        let opened = task.pull_request.as_ref().is_some_and(|p| p.number > 0);
        if task.state == pb::TaskState::Ready as i32 && opened {
            return;
        }
        assert!(Instant::now() < deadline, "stuck: {}", task.state_reason);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn submit(
    client: &mut ClaudomatorServiceClient<tonic::transport::Channel>,
    spec: pb::TaskSpec,
) -> String {
    let request = pb::SubmitTaskRequest {
        spec: Some(spec),
        ..Default::default()
    };
    let task = client.submit_task(request).await.unwrap().into_inner();
    task.task.unwrap().id
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let Some(claude) = claude_env::claude_or_skip("pull_feedback bench") else {
        return;
    };
    let deliveries: usize = std::env::var("BENCH_DELIVERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    git(&project, &["init", "--quiet", "-b", "trunk"]);
    std::fs::write(project.join("README.md"), "# bench\n").unwrap();
    git(&project, &["add", "--all"]);
    git(&project, &["commit", "--quiet", "-m", "initial"]);
    let bare = dir.path().join("remote.git");
    git(
        dir.path(),
        &["init", "--quiet", "--bare", "-b", "trunk", "remote.git"],
    );
    git(
        &project,
        &["push", "--quiet", bare.to_str().unwrap(), "trunk"],
    );

    // The agent: claude behind a wrapper that notes when it starts.
    let starts = dir.path().join("starts");
    let wrapper = dir.path().join("claude-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ndate +%s%N >> '{}'\nexec '{}' \"$@\"\n",
            starts.display(),
            claude.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mock = AnthropicMock::start(Script::Bash("date >> ran.txt".into()));
    let home = dir.path().join("home");
    let repo = RepoName::parse(REPO).unwrap();
    let host = Arc::new(FakeHost::new(&repo, bare.to_str().unwrap(), "trunk"));
    host.grant("reviewer", Permission::Write);
    let mut hosts = CodeHosts::new();
    hosts.insert("bench", repo, host.clone() as Arc<dyn CodeHost>);

    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        projects: vec![ProjectConfig {
            github: Some(REPO.into()),
            pull_requests: Some(PullMode::OnComplete),
            isolation: Some(Isolation::None),
            ..ProjectConfig::new("bench", &project)
        }],
        ..Config::default()
    };
    claude_env::configure_claude(&mut config, &mock.base_url(), &home, 1);
    config.agents.claude.command = wrapper.clone();
    config.executor.poll_interval = "100ms".into();
    config.github.webhook_secret = SECRET.into();
    config.pull_requests.max_resumes = 100;
    config.validate().unwrap();
    let running = claudomator::app::start_with_hosts(config, hosts)
        .await
        .unwrap();
    let mut client = ClaudomatorServiceClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    let hook = format!("http://{}/webhooks/github", running.http_addr);
    let http = reqwest::Client::new();
    let spec = || pb::TaskSpec {
        name: "bench".into(),
        instructions: "Note the date.".into(),
        project: "bench".into(),
        agent: Some(pb::AgentSettings {
            r#type: pb::AgentType::Claude as i32,
            ..Default::default()
        }),
        ..Default::default()
    };

    let mut seen = 0;
    let mut submit_latency = Vec::new();
    let mut review_latency = Vec::new();
    // One task whose pull request takes every review, and a new task per
    // round for the submit path, alternating so both see the same server.
    let first = submit(&mut client, spec()).await;
    next_start(&starts, seen).await;
    seen += 1;
    wait_ready(&mut client, &first).await;
    for round in 0..deliveries {
        // A plain submit to its agent starting.
        let sent = now_nanos();
        let id = submit(&mut client, spec()).await;
        let started = next_start(&starts, seen).await;
        seen += 1;
        submit_latency.push(Duration::from_nanos((started - sent) as u64));
        wait_ready(&mut client, &id).await;

        // A review on the first task's pull request to its agent resuming.
        let pull = client
            .get_task(pb::GetTaskRequest { id: first.clone() })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap()
            .pull_request
            .unwrap();
        let payload = json!({
            "action": "submitted",
            "review": {"state": "changes_requested", "body": format!("round {round}"),
                       "commit_id": pull.head_sha},
            "pull_request": {"number": pull.number, "head": {"sha": pull.head_sha}},
            "repository": {"full_name": REPO},
            "sender": {"login": "reviewer"},
        });
        let body = serde_json::to_vec(&payload).unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(&body);
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let sent = now_nanos();
        let answer = http
            .post(&hook)
            .header("content-type", "application/json")
            .header("x-github-event", "pull_request_review")
            .header("x-github-delivery", format!("bench-{round}"))
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success());
        let started = next_start(&starts, seen).await;
        seen += 1;
        review_latency.push(Duration::from_nanos((started - sent) as u64));
        // Ready again once its new commit is on the pull request.
        let deadline = Instant::now() + Duration::from_secs(120);
        while host.comments().len() < round + 1 {
            assert!(Instant::now() < deadline, "no reply after round {round}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        wait_ready(&mut client, &first).await;
    }
    running.stop().await.unwrap();

    submit_latency.sort();
    review_latency.sort();
    let (s50, s99) = (
        percentile(&submit_latency, 0.5),
        percentile(&submit_latency, 0.99),
    );
    let (r50, r99) = (
        percentile(&review_latency, 0.5),
        percentile(&review_latency, 0.99),
    );
    println!("pull request feedback: {deliveries} deliveries, each beside a plain submit");
    println!(
        "  submit -> agent process started:          p50 {:>8.1} ms   p99 {:>8.1} ms",
        s50.as_secs_f64() * 1e3,
        s99.as_secs_f64() * 1e3
    );
    println!(
        "  review webhook -> resumed agent started:  p50 {:>8.1} ms   p99 {:>8.1} ms",
        r50.as_secs_f64() * 1e3,
        r99.as_secs_f64() * 1e3
    );
    println!(
        "  ratio review/submit:                      p50 {:>8.2}x     p99 {:>8.2}x   (target within 1.2x)",
        r50.as_secs_f64() / s50.as_secs_f64(),
        r99.as_secs_f64() / s99.as_secs_f64()
    );
}
