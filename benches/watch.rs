//! WatchTasks fan-out: changes applied at a fixed rate through the server's
//! own `TaskService` (in this process), followed by many `WatchTasks`
//! watchers over real gRPC, one connection each. Latency is from just
//! before the change is applied (`submit`, which commits the task and its
//! change-log row) to its receipt by a watcher: the whole path, store,
//! change-log tailer, bus, watch filter, tonic. In the same run the same
//! number of events at the same rate go through a bare
//! `tokio::sync::broadcast` to as many in-process receivers, the floor.
//! Then watchers connect and drop their connections abruptly, round after
//! round, and the process RSS is printed after each round.
//!
//! Prints figures and ratios; asserts nothing.
//!
//! `cargo bench --bench watch`. Environment: BENCH_WATCHERS (100),
//! BENCH_RATE (1000 changes/s), BENCH_SECONDS (10), BENCH_ROUNDS (5 rounds
//! of abrupt disconnects).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use claudomator::config::{Config, ExecutorSection, ProjectConfig};
use claudomator::core::model::SubmitRequest;
use claudomator::proto as pb;
use claudomator::proto::claudomator_service_client::ClaudomatorServiceClient;
use pb::watch_tasks_response::Event;
use tokio::sync::broadcast;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Nanoseconds since the first call, on one monotonic clock for the
/// whole process.
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1e6
}

struct Figures {
    deliveries: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn figures(mut latencies: Vec<u64>) -> Figures {
    latencies.sort_unstable();
    Figures {
        deliveries: latencies.len(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: percentile(&latencies, 1.0),
    }
}

async fn connect(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connects")
}

/// Opens a changes-only watch; the receiving task collects each change's
/// latency (the apply time rides in the task's name) until `expected`
/// changes arrived or `deadline`.
async fn watcher(
    channel: Channel,
    expected: usize,
    deadline: Instant,
) -> tokio::task::JoinHandle<Vec<u64>> {
    let mut client = ClaudomatorServiceClient::new(channel);
    let mut stream = client
        .watch_tasks(pb::WatchTasksRequest {
            changes_only: true,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(expected);
        while latencies.len() < expected {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some(Ok(response))) = tokio::time::timeout(left, stream.next()).await else {
                break;
            };
            if let Some(Event::Change(change)) = response.event {
                let name = change.task.and_then(|t| t.spec).map(|s| s.name);
                if let Some(sent) = name.and_then(|n| n.strip_prefix("w").map(str::to_string)) {
                    latencies.push(now_ns().saturating_sub(sent.parse().unwrap_or(0)));
                }
            }
        }
        latencies
    })
}

/// Applies `count` changes at `rate`: each a submit whose name carries
/// the time it was issued.
async fn apply_at_rate(tasks: &claudomator::core::TaskService, count: usize, rate: u64) {
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pending = tokio::task::JoinSet::new();
    for _ in 0..count {
        tick.tick().await;
        let tasks = tasks.clone();
        pending.spawn(async move {
            let request = SubmitRequest {
                spec: claudomator::core::model::TaskSpec {
                    name: format!("w{}", now_ns()),
                    instructions: "watch me".into(),
                    project: "bench".into(),
                    ..Default::default()
                },
                ..Default::default()
            };
            tasks.submit(request).await.expect("submit");
        });
    }
    while pending.join_next().await.is_some() {}
}

/// The floor: the same number of events at the same rate through a bare
/// broadcast to as many receivers in this process.
async fn bare_broadcast(watchers: usize, count: usize, rate: u64) -> Figures {
    let (tx, _) = broadcast::channel::<u64>(count.max(16));
    let receivers: Vec<_> = (0..watchers)
        .map(|_| {
            let mut rx = tx.subscribe();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(count);
                while latencies.len() < count {
                    match rx.recv().await {
                        Ok(sent) => latencies.push(now_ns().saturating_sub(sent)),
                        Err(_) => break,
                    }
                }
                latencies
            })
        })
        .collect();
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    for _ in 0..count {
        tick.tick().await;
        let _ = tx.send(now_ns());
    }
    let mut all = Vec::new();
    for receiver in receivers {
        all.extend(receiver.await.unwrap());
    }
    figures(all)
}

#[tokio::main]
async fn main() {
    let watchers = env_number("BENCH_WATCHERS", 100) as usize;
    let rate = env_number("BENCH_RATE", 1000).max(1);
    let seconds = env_number("BENCH_SECONDS", 10);
    let rounds = env_number("BENCH_ROUNDS", 5);
    let count = (rate * seconds) as usize;

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("bench/.git")).unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        projects: vec![ProjectConfig::new("bench", dir.path().join("bench"))],
        executor: ExecutorSection {
            enabled: false,
            ..Default::default()
        },
        ..Config::default()
    };
    let server = claudomator::app::start(config)
        .await
        .expect("server starts");
    let tasks = server.tasks().clone();
    println!(
        "claudomator WatchTasks bench: {watchers} watchers (one connection each), {rate} changes/s \
         for {seconds} s ({count} changes, {} deliveries), {} cores, embedded SQLite",
        count * watchers,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );

    // Warm-up: the store, the tailer and a few connections.
    apply_at_rate(&tasks, 200, rate).await;

    let deadline = Instant::now() + Duration::from_secs(seconds + 60);
    let mut handles = Vec::new();
    for _ in 0..watchers {
        handles.push(watcher(connect(server.grpc_addr).await, count, deadline).await);
    }
    let started = Instant::now();
    apply_at_rate(&tasks, count, rate).await;
    let applied_in = started.elapsed();
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.await.unwrap());
    }
    let watch = figures(all);
    let bare = bare_broadcast(watchers, count, rate).await;
    println!(
        "applied {count} changes in {:.2} s ({:.0}/s)",
        applied_in.as_secs_f64(),
        count as f64 / applied_in.as_secs_f64()
    );
    println!("| path | deliveries | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    for (name, f) in [("WatchTasks", &watch), ("bare broadcast", &bare)] {
        println!(
            "| {name} | {} of {} | {:.3} | {:.3} | {:.3} |",
            f.deliveries,
            count * watchers,
            f.p50_ms,
            f.p99_ms,
            f.max_ms
        );
    }
    println!(
        "p99 WatchTasks {:.2} ms against bare broadcast {:.3} ms (target < 50 ms at 1000 changes/s): {}",
        watch.p99_ms,
        bare.p99_ms,
        if watch.p99_ms < 50.0 { "met" } else { "missed" }
    );

    // Abrupt disconnects: watchers connect, take some changes, and their
    // connections are dropped mid-stream; RSS after each round.
    let per_round = (rate as usize).max(100);
    println!("abrupt disconnects: {rounds} rounds of {watchers} watchers dropped mid-stream");
    let mut rss = vec![status_kb("VmRSS:")];
    for round in 1..=rounds {
        let mut channels = Vec::new();
        let mut streams = Vec::new();
        for _ in 0..watchers {
            let channel = connect(server.grpc_addr).await;
            let stream = ClaudomatorServiceClient::new(channel.clone())
                .watch_tasks(pb::WatchTasksRequest {
                    changes_only: true,
                    ..Default::default()
                })
                .await
                .expect("watch")
                .into_inner();
            channels.push(channel);
            streams.push(stream);
        }
        // Changes keep coming; nobody reads: the watches' queues fill.
        apply_at_rate(&tasks, per_round, rate).await;
        drop(streams);
        drop(channels);
        apply_at_rate(&tasks, per_round / 10, rate).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss.push(status_kb("VmRSS:"));
        println!("round {round}: RSS {} MiB", rss[round as usize] / 1024);
    }
    if rounds < 2 {
        return;
    }
    let first = rss[1] as f64 / 1024.0;
    let last = rss[rss.len() - 1] as f64 / 1024.0;
    println!(
        "RSS after round 1 {first:.1} MiB, after round {rounds} {last:.1} MiB: growth {:.1} MiB over {} rounds",
        last - first,
        rounds - 1
    );
}
