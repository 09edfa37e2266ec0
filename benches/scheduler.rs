//! Scheduler overhead: the same N Claude Code tasks (the real `claude` CLI
//! from `scripts/install-agents`, against the scripted Anthropic mock, script
//! "write hello.txt") run through claudomator (in-process server, executor
//! on, `max_concurrent` C, submitted over gRPC) and through plain
//! `xargs -P C` running the same command, in the same run. Prints wall
//! times, tasks/s and the ratios; asserts nothing.
//!
//! Baselines (each task in its own directory, all with the same argv, env
//! and `--append-system-prompt` the server passes):
//! - `bare claude`: claude alone, in a clone made before the clock starts;
//! - `clone+claude+commit`: `git clone`, branch, claude, `git add -A`,
//!   `git commit`;
//! - `+push+rm`: the above plus pushing the branch into the project and
//!   removing the clone, which is the rest of what the executor does per task.
//!
//! `cargo bench --bench scheduler` (BENCH_TASKS, default 60; BENCH_CONCURRENCY,
//! default 4; BENCH_ROUNDS, default 1; BENCH_POLL, the executor's
//! poll_interval, default 100ms; BENCH_ONLY=claudomator skips the baselines).

#[path = "../tests/support/anthropic_mock.rs"]
mod anthropic_mock;
#[path = "../tests/support/claude_env.rs"]
mod claude_env;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anthropic_mock::{AnthropicMock, Script};
use claude_env::{ClaudeEnv, claude_bin_path};
use claudomator::config::{Config, ExecutorSection, ProjectConfig};
use claudomator::proto as pb;
use claudomator::proto::claudomator_service_client::ClaudomatorServiceClient;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tonic::transport::Channel;

const PROMPT: &str = "Create hello.txt containing hi";
const MODEL: &str = "claude-sonnet-4-5";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What one scenario measured.
struct Run {
    label: String,
    wall: Duration,
    ok: usize,
    failed: usize,
    /// Mean time of one task, start to end, as the scenario itself saw it
    /// (executor: execution started_at..ended_at; xargs: the shell's clock).
    task_mean: Duration,
    /// Mean of claude's own `duration_ms` in its final `result` event.
    claude_mean_ms: f64,
    /// Sum of task times / (wall × concurrency).
    utilization: f64,
    max_in_flight: usize,
    messages_calls: usize,
    /// Free-form extra line.
    note: String,
}

impl Run {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.wall.as_secs_f64()
    }
}

/// A git repository with one commit on branch `trunk`, independent of any
/// global git config (as tests/common does).
fn init_git_repo(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("README.md"), "# bench\n").unwrap();
    for args in [
        &["init", "-q", "-b", "trunk"][..],
        &["add", "README.md"],
        &[
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-q",
            "-m",
            "initial",
        ],
    ] {
        let status = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .status()
            .expect("git runs");
        assert!(status.success(), "git {args:?} failed");
    }
}

/// The claude environment for one scenario (its own HOME), as strings.
fn claude_vars(mock: &AnthropicMock, home: &Path) -> BTreeMap<String, String> {
    let mut env = ClaudeEnv::new(mock.base_url(), home);
    env.max_retries = 1;
    std::fs::create_dir_all(env.config_dir()).unwrap();
    std::fs::create_dir_all(env.tmp_dir()).unwrap();
    env.vars()
        .into_iter()
        .map(|(k, v)| (k, v.to_string_lossy().into_owned()))
        .collect()
}

/// claude's final `result` event in a stream-json output: (success, duration_ms).
fn read_result(jsonl: &str) -> Option<(bool, f64)> {
    jsonl
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["type"] == "result")
        .map(|event| {
            (
                event["subtype"] == "success" && event["is_error"] != true,
                event["duration_ms"].as_f64().unwrap_or(0.0),
            )
        })
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Baseline {
    Bare,
    CloneCommit,
    CloneCommitPushRm,
}

impl Baseline {
    fn label(self) -> &'static str {
        match self {
            Baseline::Bare => "xargs: bare claude",
            Baseline::CloneCommit => "xargs: clone+claude+commit",
            Baseline::CloneCommitPushRm => "xargs: +push+rm",
        }
    }

    fn script(self) -> String {
        let claude = r#""$CLAUDE" -p "$PROMPT" --output-format stream-json --verbose --permission-mode acceptEdits --model "$MODEL" --append-system-prompt "$SYSPROMPT" </dev/null >"$ROOT/$t.jsonl" 2>"$ROOT/$t.err""#;
        let commit = r#"git add --all
git -c user.name=bench -c user.email=bench@localhost -c commit.gpgsign=false commit --quiet --no-verify -m "task $t""#;
        let body = match self {
            Baseline::Bare => format!("cd \"$ROOT/$t\"\n{claude}"),
            Baseline::CloneCommit => format!(
                "git clone --quiet --no-hardlinks \"$PROJECT\" \"$ROOT/$t\"\ncd \"$ROOT/$t\"\n\
                 git checkout --quiet -b \"claudomator/$t\"\n{claude}\n{commit}"
            ),
            Baseline::CloneCommitPushRm => format!(
                "git clone --quiet --no-hardlinks \"$PROJECT\" \"$ROOT/$t\"\ncd \"$ROOT/$t\"\n\
                 git checkout --quiet -b \"claudomator/$t\"\n{claude}\n{commit}\n\
                 git push --quiet origin \"claudomator/$t\"\ncd \"$ROOT\"\nrm -rf \"$ROOT/$t\""
            ),
        };
        // The clock is taken inside, so a task's time excludes xargs' fork of sh.
        format!(
            "set -e\nt=$1\ns=$(date +%s%N)\n{body}\ne=$(date +%s%N)\necho \"$s $e\" >\"$ROOT/$t.time\"\n"
        )
    }
}

/// `seq N | xargs -P C sh -c SCRIPT` against a fresh mock, project and HOME.
async fn run_xargs(kind: Baseline, n: usize, concurrency: usize, base: &Path) -> Run {
    let dir = base.join(kind.label().replace([' ', ':', '+'], "_"));
    let project = dir.join("project");
    let root = dir.join("work");
    init_git_repo(&project);
    std::fs::create_dir_all(&root).unwrap();
    let ids: Vec<String> = (1..=n).map(|i| format!("t{i:04}")).collect();
    if kind == Baseline::Bare {
        // The same kind of working directory claude sees under claudomator,
        // made before the clock starts.
        for id in &ids {
            let status = std::process::Command::new("git")
                .args(["clone", "--quiet", "--no-hardlinks"])
                .arg(&project)
                .arg(root.join(id))
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
    let mock = AnthropicMock::start(Script::write_file("hello.txt", "hi"));
    let vars = claude_vars(&mock, &dir.join("home"));

    let mut cmd = tokio::process::Command::new("xargs");
    cmd.args(["-P", &concurrency.to_string(), "-n", "1", "sh", "-c"])
        .arg(kind.script())
        .arg("sh")
        .envs(&vars)
        .env("CLAUDE", claude_bin_path())
        .env("PROMPT", PROMPT)
        .env("MODEL", MODEL)
        .env("SYSPROMPT", claudomator::core::executor::SYSTEM_PROMPT)
        .env("ROOT", &root)
        .env("PROJECT", &project)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("xargs runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{}\n", ids.join("\n")).as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);

    let (mut ok, mut failed, mut task_total, mut claude_total) = (0, 0, 0u64, 0.0);
    let mut first_error = String::new();
    for id in &ids {
        let time = std::fs::read_to_string(root.join(format!("{id}.time"))).unwrap_or_default();
        let jsonl = std::fs::read_to_string(root.join(format!("{id}.jsonl"))).unwrap_or_default();
        let result = read_result(&jsonl);
        let wrote = kind == Baseline::CloneCommitPushRm
            || std::fs::read_to_string(root.join(id).join("hello.txt")).is_ok_and(|s| s == "hi");
        let times: Vec<u64> = time
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        match (times.as_slice(), result) {
            ([s, e], Some((true, ms))) if wrote => {
                ok += 1;
                task_total += e - s;
                claude_total += ms;
            }
            _ => {
                failed += 1;
                if first_error.is_empty() {
                    let err =
                        std::fs::read_to_string(root.join(format!("{id}.err"))).unwrap_or_default();
                    first_error = format!("{id}: {}", err.lines().last().unwrap_or(""));
                }
            }
        }
    }
    let task_mean = Duration::from_nanos(task_total / ok.max(1) as u64);
    let note = if !out.status.success() || failed > 0 {
        format!(
            "xargs exit {:?}; first failure {first_error}; stderr: {}",
            out.status.code(),
            stderr.lines().take(3).collect::<Vec<_>>().join(" | ")
        )
    } else {
        String::new()
    };
    Run {
        label: kind.label().into(),
        wall,
        ok,
        failed,
        task_mean,
        claude_mean_ms: claude_total / ok.max(1) as f64,
        utilization: task_total as f64 / 1e9 / (wall.as_secs_f64() * concurrency as f64),
        max_in_flight: mock.max_in_flight(),
        messages_calls: mock.messages_calls(),
        note,
    }
}

/// A project entry built through serde, so optional fields added to
/// `ProjectConfig` later keep their defaults.
fn project_config(name: &str, path: &Path) -> ProjectConfig {
    serde_json::from_value(serde_json::json!({"name": name, "path": path})).unwrap()
}

fn millis(ts: &Option<prost_types::Timestamp>) -> i64 {
    ts.as_ref()
        .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

/// The N tasks through an in-process claudomator server.
async fn run_claudomator(n: usize, concurrency: usize, poll: &str, base: &Path) -> Run {
    let dir = base.join("claudomator");
    let project = dir.join("project");
    init_git_repo(&project);
    let mock = AnthropicMock::start(Script::write_file("hello.txt", "hi"));
    let vars = claude_vars(&mock, &dir.join("home"));
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        projects: vec![project_config("bench", &project)],
        executor: ExecutorSection {
            enabled: true,
            max_concurrent: concurrency,
            poll_interval: poll.into(),
            ..Default::default()
        },
        ..Config::default()
    };
    config.agents.claude.command = claude_bin_path();
    config.agents.claude.env = vars;
    config.agents.claude.model = MODEL.into();
    config.validate().expect("bench config is valid");
    let server = claudomator::app::start(config)
        .await
        .expect("server starts");
    let channel = Channel::from_shared(format!("http://{}", server.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ClaudomatorServiceClient::new(channel);

    let started_ms = now_unix_ms();
    let started = Instant::now();
    for i in 0..n {
        let spec = pb::TaskSpec {
            name: format!("hello {i}"),
            instructions: PROMPT.into(),
            project: "bench".into(),
            agent: Some(pb::AgentSettings {
                r#type: pb::AgentType::Claude as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        client
            .submit_task(pb::SubmitTaskRequest {
                spec: Some(spec),
                ..Default::default()
            })
            .await
            .expect("submit");
    }
    let submitted = started.elapsed();

    let terminal = [
        pb::TaskState::Completed,
        pb::TaskState::Failed,
        pb::TaskState::TimedOut,
        pb::TaskState::Cancelled,
        pb::TaskState::BudgetExceeded,
        pb::TaskState::Ready,
    ]
    .map(|s| s as i32);
    let deadline = Instant::now() + Duration::from_secs(60 + 30 * n as u64);
    let tasks = loop {
        let mut tasks = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_tasks(pb::ListTasksRequest {
                    page_size: 500,
                    page_token,
                    ..Default::default()
                })
                .await
                .expect("list")
                .into_inner();
            tasks.extend(page.tasks);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        if tasks.iter().all(|t| terminal.contains(&t.state)) && tasks.len() == n {
            break tasks;
        }
        if Instant::now() > deadline {
            println!("claudomator: gave up waiting; states:");
            for t in &tasks {
                println!("  {} {:?} {}", t.id, t.state, t.state_reason);
            }
            break tasks;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let observed = started.elapsed();
    // The server's own clock for "last completion": exact, unlike the poll.
    let last_done_ms = tasks
        .iter()
        .map(|t| millis(&t.updated_at))
        .max()
        .unwrap_or(0);
    let wall = Duration::from_millis((last_done_ms - started_ms).max(0) as u64);

    let mut ok = 0;
    let mut failed = 0;
    let mut first_error = String::new();
    let mut task_total = 0i64;
    let mut claude_total = 0.0;
    let mut first_start = i64::MAX;
    let mut lags = Vec::new();
    for task in &tasks {
        if task.state != pb::TaskState::Completed as i32 {
            failed += 1;
            if first_error.is_empty() {
                first_error = format!("{}: {}", task.id, task.state_reason);
            }
            continue;
        }
        ok += 1;
        let runs = client
            .list_executions(pb::ListExecutionsRequest {
                task_id: task.id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .executions;
        if let Some(run) = runs.first() {
            let (s, e) = (millis(&run.started_at), millis(&run.ended_at));
            task_total += e - s;
            first_start = first_start.min(s);
            // How long the task stayed finished-but-not-COMPLETED.
            lags.push(millis(&task.updated_at) - e);
            let log = std::fs::read_to_string(&run.log_path).unwrap_or_default();
            // The executor's log keeps claude's raw line in `raw`.
            let raw: String = log
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter_map(|v| v["raw"].as_str().map(str::to_string))
                .collect::<Vec<_>>()
                .join("\n");
            if let Some((_, ms)) = read_result(&raw) {
                claude_total += ms;
            }
        }
    }
    server.stop().await.expect("clean shutdown");
    let note = format!(
        "submit of {n} took {:.1} ms; first execution started {} ms after the first submit; \
         poll saw the last completion at {:.3} s; record lag (execution end -> task COMPLETED) max {} ms{}",
        submitted.as_secs_f64() * 1e3,
        first_start - started_ms,
        observed.as_secs_f64(),
        lags.iter().max().copied().unwrap_or(0),
        if first_error.is_empty() {
            String::new()
        } else {
            format!("; first failure {first_error}")
        }
    );
    Run {
        label: "claudomator".into(),
        wall,
        ok,
        failed,
        task_mean: Duration::from_millis((task_total / ok.max(1) as i64) as u64),
        claude_mean_ms: claude_total / ok.max(1) as f64,
        utilization: task_total as f64 / 1e3 / (wall.as_secs_f64() * concurrency as f64),
        max_in_flight: mock.max_in_flight(),
        messages_calls: mock.messages_calls(),
        note,
    }
}

fn print_run(r: &Run) {
    println!(
        "{:<28} wall {:>8.3} s  {:>6.2} tasks/s  ok {:>3} failed {:>2}  task mean {:>7.0} ms  \
         claude duration_ms mean {:>6.0}  slot use {:>5.1}%  mock max in flight {} ({} /v1/messages calls)  load {}",
        r.label,
        r.wall.as_secs_f64(),
        r.rate(),
        r.ok,
        r.failed,
        r.task_mean.as_secs_f64() * 1e3,
        r.claude_mean_ms,
        r.utilization * 100.0,
        r.max_in_flight,
        r.messages_calls,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?"),
    );
    if !r.note.is_empty() {
        println!("{:<28} {}", "", r.note);
    }
}

#[tokio::main]
async fn main() {
    let claude = claude_bin_path();
    if !claude.is_file() {
        println!(
            "SKIPPED scheduler bench: claude CLI not installed at {}; run scripts/install-agents",
            claude.display()
        );
        return;
    }
    let n = env_number("BENCH_TASKS", 60) as usize;
    let concurrency = env_number("BENCH_CONCURRENCY", 4) as usize;
    let rounds = env_number("BENCH_ROUNDS", 1).max(1) as usize;
    let poll = std::env::var("BENCH_POLL").unwrap_or_else(|_| "100ms".into());
    let only_claudomator = std::env::var("BENCH_ONLY").is_ok_and(|v| v == "claudomator");
    let base = tempfile::tempdir().unwrap();
    println!(
        "claudomator scheduler bench: {n} tasks, concurrency {concurrency}, {rounds} round(s), \
         {} cores, executor poll_interval {poll}, claude {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        claude_env::CLAUDE_CODE_VERSION
    );

    // Warm-up (not measured): page the claude binary in, first-run setup.
    let warm = run_xargs(Baseline::Bare, 2, 2, &base.path().join("warmup")).await;
    println!(
        "warm-up: {} ok, {} failed in {:.2} s{}",
        warm.ok,
        warm.failed,
        warm.wall.as_secs_f64(),
        if warm.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", warm.note)
        }
    );

    let mut ratios: Vec<(f64, f64, f64)> = Vec::new();
    for round in 0..rounds {
        let dir = base.path().join(format!("round{round}"));
        println!("\n== round {}", round + 1);
        if only_claudomator {
            print_run(&run_claudomator(n, concurrency, &poll, &dir).await);
            continue;
        }
        // Every other round in reverse order, so a drift in the machine's
        // load (it is shared) does not always favour the same side.
        let mut order = vec![
            Some(Baseline::Bare),
            Some(Baseline::CloneCommit),
            Some(Baseline::CloneCommitPushRm),
            None,
        ];
        if round % 2 == 1 {
            order.reverse();
        }
        let mut runs: Vec<(Option<Baseline>, Run)> = Vec::new();
        for which in order {
            let run = match which {
                Some(kind) => run_xargs(kind, n, concurrency, &dir).await,
                None => run_claudomator(n, concurrency, &poll, &dir).await,
            };
            print_run(&run);
            runs.push((which, run));
        }
        let mut take = |which: Option<Baseline>| {
            let at = runs.iter().position(|(w, _)| *w == which).unwrap();
            runs.remove(at).1
        };
        let (bare, clone, full, ours) = (
            take(Some(Baseline::Bare)),
            take(Some(Baseline::CloneCommit)),
            take(Some(Baseline::CloneCommitPushRm)),
            take(None),
        );
        let ratio = |b: &Run| ours.wall.as_secs_f64() / b.wall.as_secs_f64();
        let r = (ratio(&bare), ratio(&clone), ratio(&full));
        println!(
            "ratio claudomator/bare claude: {:.3}   claudomator/clone+claude+commit: {:.3} (target <= 1.10: {})   \
             claudomator/+push+rm: {:.3}   mock max in flight {} (<= {concurrency}: {})",
            r.0,
            r.1,
            if r.1 <= 1.10 { "met" } else { "missed" },
            r.2,
            ours.max_in_flight,
            if ours.max_in_flight <= concurrency {
                "yes"
            } else {
                "no"
            }
        );
        ratios.push(r);
    }
    if rounds > 1 && !ratios.is_empty() {
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let clone = median(ratios.iter().map(|r| r.1).collect());
        println!(
            "\nmedian of {rounds} rounds: claudomator/bare {:.3}  claudomator/clone+claude+commit {clone:.3} (target <= 1.10: {})  claudomator/+push+rm {:.3}",
            median(ratios.iter().map(|r| r.0).collect()),
            if clone <= 1.10 { "met" } else { "missed" },
            median(ratios.iter().map(|r| r.2).collect()),
        );
    }
}
