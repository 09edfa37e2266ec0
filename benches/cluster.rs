//! Scale-out: throughput of one, two and three servers on one PostgreSQL
//! database, in the same run, each server with the same concurrency limit,
//! running `local` tasks against a scripted model server that takes a fixed
//! time per answer (agents are I/O-bound for the server). Prints tasks/s,
//! the scaling ratios, and the claim latency (task queued → attempt
//! started) p50/p99 per size; asserts nothing.
//!
//! `cargo bench --bench cluster` (BENCH_TASKS per size, default 96;
//! BENCH_CONCURRENCY per server, default 4; BENCH_TASK_MS, the model's time
//! per answer, default 1000). PostgreSQL: `CLAUDOMATOR_TEST_POSTGRES`, else
//! the project's throwaway cluster (`scripts/pg-cluster start`).

#[path = "../tests/support/chat_mock.rs"]
mod chat_mock;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/support/http_thread.rs"]
mod http_thread;

use std::time::{Duration, Instant};

use chat_mock::{ChatMock, Reply};
use claudomator::app;
use claudomator::proto as pb;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn millis(ts: &Option<prost_types::Timestamp>) -> i64 {
    ts.as_ref()
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
        .unwrap_or_default()
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

struct Measured {
    servers: usize,
    wall: Duration,
    tasks: usize,
    claim_ms: Vec<i64>,
    per_server: Vec<(String, usize)>,
}

async fn run(servers: usize, tasks: usize, concurrency: usize, mock: &ChatMock) -> Measured {
    let database_url = common::postgres_database().await;
    let dirs = tempfile::tempdir().unwrap();
    let mut running = Vec::new();
    for i in 0..servers {
        let dir = dirs.path().join(format!("s{i}"));
        let mut config = common::test_config(&dir);
        config.database_url = database_url.clone();
        config.executor.enabled = true;
        config.executor.max_concurrent = concurrency;
        config.executor.poll_interval = "100ms".into();
        config.executor.server_id = format!("s{i}");
        config.local_model.endpoint = mock.endpoint();
        config.local_model.max_concurrent = concurrency;
        config.local_model.max_tokens = 64;
        config.validate().expect("bench config is valid");
        running.push(app::start(config).await.expect("server starts"));
    }
    let mut client: common::Client =
        pb::claudomator_service_client::ClaudomatorServiceClient::connect(format!(
            "http://{}",
            running[0].grpc_addr
        ))
        .await
        .unwrap();

    let started = Instant::now();
    let mut ids = Vec::with_capacity(tasks);
    for i in 0..tasks {
        ids.push(submit(&mut client, i).await);
    }
    wait_all(&mut client, tasks).await;
    let wall = started.elapsed();
    let mut per_server = std::collections::BTreeMap::new();
    for id in &ids {
        for e in common::executions(&mut client, id).await {
            *per_server.entry(e.server_id.clone()).or_insert(0) += 1;
        }
    }

    // Claim latency: tasks trickle in while slots are free, so the time
    // from submit to the attempt's start is the claim, not the queue.
    let mut claim_ms = Vec::new();
    for i in 0..CLAIM_SAMPLES {
        let id = submit(&mut client, tasks + i).await;
        tokio::time::sleep(CLAIM_SPACING).await;
        ids.push(id);
    }
    wait_all(&mut client, tasks + CLAIM_SAMPLES).await;
    for id in &ids[tasks..] {
        let task = common::get(&mut client, id).await;
        for e in common::executions(&mut client, id).await {
            claim_ms.push(millis(&e.started_at) - millis(&task.created_at));
        }
    }
    claim_ms.sort_unstable();
    for server in running {
        server.stop().await.expect("server stops");
    }
    Measured {
        servers,
        wall,
        tasks,
        claim_ms,
        per_server: per_server.into_iter().collect(),
    }
}

/// Tasks sent one at a time for the claim-latency sample, slower than one
/// server's slots drain them (4 slots, ~1 s a task), so none waits for a slot.
const CLAIM_SAMPLES: usize = 20;
const CLAIM_SPACING: Duration = Duration::from_millis(400);

async fn submit(client: &mut common::Client, i: usize) -> String {
    client
        .submit_task(pb::SubmitTaskRequest {
            spec: Some(pb::TaskSpec {
                instructions: format!("say something, part {i}"),
                project: "demo".into(),
                agent: Some(pb::AgentSettings {
                    r#type: pb::AgentType::Local as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap()
        .id
}

/// Waits until `tasks` tasks have finished; panics if any did not complete.
async fn wait_all(client: &mut common::Client, tasks: usize) {
    loop {
        let all = common::all_tasks(client).await;
        let finished = all
            .iter()
            .filter(|t| {
                matches!(
                    t.state(),
                    pb::TaskState::Completed | pb::TaskState::Failed | pb::TaskState::Cancelled
                )
            })
            .count();
        if finished == tasks {
            let failed: Vec<_> = all
                .iter()
                .filter(|t| t.state() != pb::TaskState::Completed)
                .map(|t| t.state_reason.clone())
                .collect();
            assert!(failed.is_empty(), "tasks failed: {failed:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let tasks = env_number("BENCH_TASKS", 96) as usize;
    let concurrency = env_number("BENCH_CONCURRENCY", 4) as usize;
    let task_ms = env_number("BENCH_TASK_MS", 1000);
    // Ten words, one every task_ms / 10: a fixed time per answer. It ends
    // with a summary, so no summary call follows.
    let text = "working on it now and done.\n\n## Summary\nDone.";
    let words = text.split_whitespace().count() as u64;
    let mock = ChatMock::always(Reply::Slow {
        text: text.into(),
        delay: Duration::from_millis(task_ms / words),
    });
    println!(
        "cluster bench: {tasks} local tasks per size, {concurrency} at once per server, \
         ~{task_ms} ms per answer, PostgreSQL"
    );
    let mut results = Vec::new();
    for servers in 1..=3 {
        let m = run(servers, tasks, concurrency, &mock).await;
        let rate = m.tasks as f64 / m.wall.as_secs_f64();
        println!(
            "{} server(s): {:>6.2} s, {:>6.2} tasks/s, claim latency (submit to start, \
             slots free) p50 {} ms p99 {} ms, runs per server {:?}, load {}",
            m.servers,
            m.wall.as_secs_f64(),
            rate,
            percentile(&m.claim_ms, 50.0),
            percentile(&m.claim_ms, 99.0),
            m.per_server,
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .unwrap_or("?"),
        );
        results.push(rate);
    }
    println!(
        "scaling: 2 servers {:.2}x, 3 servers {:.2}x one server (target for 3: >= 2.7x)",
        results[1] / results[0],
        results[2] / results[0]
    );
}
