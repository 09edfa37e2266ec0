//! SIGKILL the real server binary mid-run and mid-burst, restart it on the
//! same data dir, and check that nothing acknowledged was lost, nothing is
//! left RUNNING, no agent process is orphaned, and every task finishes.

mod common;
mod support;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use claudomator::proto as pb;
use common::processes_in;
use support::anthropic_mock::{AnthropicMock, Script};
use support::claude_env::claude_or_skip;
use support::server_process::{ServerProcess, write_claude_config};

/// A tiny deterministic generator for the kill points (seeded, bounded).
struct Lcg(u64);

impl Lcg {
    fn next_ms(&mut self, low: u64, high: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        low + (self.0 >> 33) % (high - low)
    }
}

fn claude_task(name: &str, key: &str) -> pb::SubmitTaskRequest {
    pb::SubmitTaskRequest {
        spec: Some(pb::TaskSpec {
            instructions: format!("narrate {name}"),
            project: "demo".into(),
            agent: Some(pb::AgentSettings {
                r#type: pb::AgentType::Claude as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        idempotency_key: key.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_and_leaves_no_orphans() {
    if claude_or_skip("sigkill_loses_nothing_and_leaves_no_orphans").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("demo");
    common::init_git_repo(&project);
    // Each run streams for about two seconds, so kills land mid-run.
    let mock = AnthropicMock::start(Script::Slow {
        delay_per_event: Duration::from_millis(60),
        chunks: 30,
    });
    let database_url = common::test_database().await;
    let config = write_claude_config(dir.path(), &mock, &project, &database_url, &[], &[]);
    let sandboxes = dir.path().join("data").join("sandboxes");

    let mut acknowledged: HashSet<String> = HashSet::new();
    let mut rng = Lcg(0x5eed_2026);
    let mut kills = 0;
    // Agent processes found in the sandboxes right after each kill: the
    // dead server's orphans, which the restart must end.
    let mut orphans: HashSet<u32> = HashSet::new();

    // Rounds 1-3: submit a few, kill at a random point while agents run.
    for round in 0..3 {
        let server = ServerProcess::start(&config, &project);
        let mut client = server.client().await;
        for i in 0..3 {
            let response = client
                .submit_task(claude_task(
                    &format!("r{round}-{i}"),
                    &format!("r{round}-{i}"),
                ))
                .await
                .unwrap()
                .into_inner();
            acknowledged.insert(response.task.unwrap().id);
        }
        let wait = rng.next_ms(300, 2500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.kill9();
        kills += 1;
        orphans.extend(pids_in(&sandboxes));
    }

    // Round 4: kill in the middle of a burst of submits.
    {
        let server = ServerProcess::start(&config, &project);
        let mut burst = tokio::task::JoinSet::new();
        for i in 0..40 {
            let mut client = server.client().await;
            burst.spawn(async move {
                tokio::time::sleep(Duration::from_millis(i * 5)).await;
                client
                    .submit_task(claude_task(&format!("burst-{i}"), &format!("burst-{i}")))
                    .await
                    .ok()
                    .and_then(|r| r.into_inner().task)
                    .map(|t| t.id)
            });
        }
        tokio::time::sleep(Duration::from_millis(rng.next_ms(40, 160))).await;
        server.kill9();
        kills += 1;
        orphans.extend(pids_in(&sandboxes));
        while let Some(done) = burst.join_next().await {
            if let Some(id) = done.unwrap() {
                acknowledged.insert(id);
            }
        }
    }

    // Restart: reconcile, then run everything to the end.
    let server = ServerProcess::start(&config, &project);
    let mut client = server.client().await;
    // The server reconciles before it says where it listens.
    let survivors: Vec<u32> = orphans.iter().copied().filter(|pid| alive(*pid)).collect();
    for pid in &survivors {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        eprintln!(
            "survivor {pid} in {}: {} | {}",
            cwd.display(),
            stat.trim(),
            cmd.replace('\0', " ")
        );
    }
    let orphans_after_restart = survivors.len();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (lost, stuck) = loop {
        let tasks = common::all_tasks(&mut client).await;
        let present: HashSet<String> = tasks.iter().map(|t| t.id.clone()).collect();
        let lost = acknowledged.difference(&present).count();
        let unfinished = tasks
            .iter()
            .filter(|t| t.state != pb::TaskState::Completed as i32)
            .count();
        if unfinished == 0 || Instant::now() > deadline {
            break (lost, unfinished);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let tasks = common::all_tasks(&mut client).await;
    let mut interrupted = 0;
    let mut running_left = 0;
    for task in &tasks {
        for run in client
            .list_executions(pb::ListExecutionsRequest {
                task_id: task.id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .executions
        {
            interrupted += usize::from(run.state == pb::ExecutionState::Interrupted as i32);
            running_left += usize::from(run.state == pb::ExecutionState::Running as i32);
            if run.state == pb::ExecutionState::Interrupted as i32 {
                assert!(run.ended_at.is_some());
                assert!(run.error.contains("interrupted"), "{}", run.error);
            }
        }
    }
    for task in tasks
        .iter()
        .filter(|t| t.state != pb::TaskState::Completed as i32)
    {
        eprintln!(
            "unfinished task {}: state {} ({})",
            task.id, task.state, task.state_reason
        );
    }
    let orphans_at_end = processes_in(&sandboxes).len();
    eprintln!(
        "crash tally: kills {kills}, tasks acknowledged {}, tasks lost {lost}, \
         orphans seen right after the kills {}, orphans left after \
         restart {orphans_after_restart}, executions interrupted {interrupted}, \
         unfinished {stuck}, total tasks {}",
        acknowledged.len(),
        orphans.len(),
        tasks.len()
    );
    assert_eq!(lost, 0, "acknowledged tasks were lost");
    assert_eq!(
        orphans_after_restart, 0,
        "agent processes outlived the dead server"
    );
    assert_eq!(stuck, 0, "every task finishes");
    assert_eq!(running_left, 0, "no execution is left RUNNING");
    assert_eq!(orphans_at_end, 0);
    assert!(interrupted > 0, "the kills landed mid-run at least once");
    assert!(acknowledged.len() >= 9);
}

fn pids_in(dir: &Path) -> Vec<u32> {
    processes_in(dir)
        .iter()
        .filter_map(|p| p.split(':').next()?.parse().ok())
        .collect()
}

/// Running (not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}
