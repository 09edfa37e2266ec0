//! Signed GitHub deliveries per second the webhook shim accepts, beside a
//! bare axum handler that only verifies the HMAC, both served in this
//! process on loopback and driven by the same 50 concurrent senders in the
//! same run. Prints figures and the ratio; asserts nothing.
//!
//! The shim gets a real failing `workflow_run` (from @octokit/webhooks-examples,
//! installed by scripts/install-webhook-examples): the first delivery creates
//! the triage task, every later one goes the whole way (signature, JSON,
//! project, the store lookup) and is answered as a duplicate.
//!
//! `cargo bench --bench webhook` (BENCH_SECONDS, BENCH_SENDERS adjust the run).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use claudomator::config::{Config, ProjectConfig};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

#[path = "../tests/support/webhook_examples.rs"]
mod webhook_examples;

const SECRET: &str = "bench-secret";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn signature_of(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The recorded successful workflow_run, failing.
fn failing_workflow_run() -> Value {
    let mut payload = webhook_examples::example("workflow_run", |p| {
        p["action"] == "completed" && p["workflow_run"]["conclusion"] == "success"
    });
    payload["workflow_run"]["conclusion"] = json!("failure");
    payload
}

/// The bare baseline: verify the HMAC, answer 200.
async fn bare(headers: HeaderMap, body: Bytes) -> StatusCode {
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(digest) = signature
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return StatusCode::UNAUTHORIZED;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&body);
    match mac.verify_slice(&digest) {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::UNAUTHORIZED,
    }
}

struct Figures {
    accepted: usize,
    refused: usize,
    seconds: f64,
    p50: Duration,
    p99: Duration,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.accepted as f64 / self.seconds
    }
}

/// `senders` loops POSTing the signed body to `url` for `duration`, after a
/// short warm-up.
async fn drive(url: String, body: Arc<Vec<u8>>, senders: usize, duration: Duration) -> Figures {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(senders)
        .build()
        .unwrap();
    let signature = signature_of(&body);
    let send = {
        let client = client.clone();
        move || {
            client
                .post(url.clone())
                .header("content-type", "application/json")
                .header("x-github-event", "workflow_run")
                .header("x-github-delivery", "bench")
                .header("x-hub-signature-256", signature.clone())
                .body(body.as_ref().clone())
                .send()
        }
    };
    // Warm-up: connections open, the first (creating) delivery done.
    for _ in 0..senders {
        let _ = send().await;
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..senders {
        let send = send.clone();
        loops.spawn(async move {
            let (mut ok, mut bad, mut latencies) = (0usize, 0usize, Vec::new());
            while Instant::now() < deadline {
                let t = Instant::now();
                match send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        ok += 1;
                    }
                    _ => bad += 1,
                }
                latencies.push(t.elapsed());
            }
            (ok, bad, latencies)
        });
    }
    let (mut accepted, mut refused, mut latencies) = (0, 0, Vec::new());
    while let Some(done) = loops.join_next().await {
        let (ok, bad, l) = done.unwrap();
        accepted += ok;
        refused += bad;
        latencies.extend(l);
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        accepted,
        refused,
        seconds,
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name:<34} {:>9.0} deliveries/s  ({} accepted, {} refused in {:.1} s)  p50 {:>6.2} ms  p99 {:>6.2} ms",
        f.rate(),
        f.accepted,
        f.refused,
        f.seconds,
        f.p50.as_secs_f64() * 1e3,
        f.p99.as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    let seconds = env_number("BENCH_SECONDS", 5);
    let senders = env_number("BENCH_SENDERS", 50) as usize;
    let duration = Duration::from_secs(seconds);
    let payload = failing_workflow_run();
    let body = Arc::new(serde_json::to_vec(&payload).unwrap());

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("bench/.git")).unwrap();
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        projects: vec![ProjectConfig {
            github: Some("octo-org/octo-repo".into()),
            ..ProjectConfig::new("bench", dir.path().join("bench"))
        }],
        ..Config::default()
    };
    config.executor.enabled = false;
    config.github.webhook_secret = SECRET.into();
    let server = claudomator::app::start(config).await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bare_addr: SocketAddr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/webhooks/github", axum::routing::post(bare));
    tokio::spawn(async move { axum::serve(listener, app).await });

    println!(
        "webhook shim vs bare HMAC-verifying axum handler: {senders} concurrent senders, {seconds} s each, \
         a {} byte signed workflow_run",
        body.len()
    );
    let shim = drive(
        format!("http://{}/webhooks/github", server.http_addr),
        body.clone(),
        senders,
        duration,
    )
    .await;
    print("shim (verify, parse, dedup lookup)", &shim);
    let baseline = drive(
        format!("http://{bare_addr}/webhooks/github"),
        body,
        senders,
        duration,
    )
    .await;
    print("bare axum, HMAC only", &baseline);
    println!(
        "ratio shim / bare: {:.2} (throughput), {:.2}x p50 latency",
        shim.rate() / baseline.rate(),
        shim.p50.as_secs_f64() / baseline.p50.as_secs_f64()
    );
    server.stop().await.unwrap();
}
