//! SIGKILL the real server binary mid-run and mid-burst, restart it on the
//! same data dir, and check that nothing acknowledged was lost, nothing is
//! left RUNNING, no agent process is orphaned, and every task finishes.

mod common;
mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use claudomator::proto as pb;
use claudomator::proto::claudomator_service_client::ClaudomatorServiceClient;
use common::processes_in;
use support::anthropic_mock::{AnthropicMock, Script};
use support::claude_env::{ClaudeEnv, claude_bin_path, claude_or_skip};
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_claudomator");

/// The server binary, started and killed like a real deployment.
struct ServerProcess {
    child: Child,
    addr: String,
}

impl ServerProcess {
    fn start(config: &Path, cwd: &Path) -> ServerProcess {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .current_dir(cwd)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server says where it listens");
        ServerProcess { child, addr }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    async fn client(&self) -> ClaudomatorServiceClient<Channel> {
        ClaudomatorServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

fn write_config(dir: &Path, mock: &AnthropicMock, project: &Path, database_url: &str) -> PathBuf {
    let mut env = ClaudeEnv::new(mock.base_url(), dir.join("claude-home"));
    env.max_retries = 1;
    std::fs::create_dir_all(env.config_dir()).unwrap();
    std::fs::create_dir_all(env.tmp_dir()).unwrap();
    let mut table = toml::Table::new();
    table.insert("listen".into(), "127.0.0.1:0".into());
    table.insert(
        "data_dir".into(),
        dir.join("data").display().to_string().into(),
    );
    table.insert("database_url".into(), database_url.into());
    let mut executor = toml::Table::new();
    executor.insert("max_concurrent".into(), 3.into());
    executor.insert("poll_interval".into(), "200ms".into());
    executor.insert("retry_base".into(), "1s".into());
    table.insert("executor".into(), executor.into());
    let mut defaults = toml::Table::new();
    defaults.insert("max_attempts".into(), 10.into());
    table.insert("defaults".into(), defaults.into());
    let mut claude = toml::Table::new();
    claude.insert(
        "command".into(),
        claude_bin_path().display().to_string().into(),
    );
    claude.insert("model".into(), "claude-sonnet-4-5".into());
    let vars: toml::Table = env
        .vars()
        .into_iter()
        .map(|(k, v)| (k, toml::Value::from(v.to_string_lossy().into_owned())))
        .collect();
    claude.insert("env".into(), vars.into());
    let mut agents = toml::Table::new();
    agents.insert("claude".into(), claude.into());
    table.insert("agents".into(), agents.into());
    let mut project_entry = toml::Table::new();
    project_entry.insert("name".into(), "demo".into());
    project_entry.insert("path".into(), project.display().to_string().into());
    table.insert(
        "projects".into(),
        toml::Value::Array(vec![project_entry.into()]),
    );
    let path = dir.join("claudomator.toml");
    std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
    path
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
    let config = write_config(dir.path(), &mock, &project, &common::test_database().await);
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
