//! Scheduler overhead: the same N tasks run through claudomator (in-process
//! server, executor on, `max_concurrent` C, submitted over gRPC) and through
//! plain `xargs -P C` running the same commands, in the same run. Prints
//! wall times, tasks/s and the ratios; asserts nothing.
//!
//! Scenarios (BENCH_AGENTS, default `claude,mix`):
//! - `claude`: N Claude Code tasks (the real `claude` CLI from
//!   `scripts/install-agents`, against the scripted Anthropic mock, script
//!   "write hello.txt");
//! - `mix`: the three agents in turn (claude, gemini, codex, claude, …), each
//!   real CLI against its own scripted model server (Anthropic, Gemini,
//!   OpenAI Responses), each writing hello.txt;
//! - `gemini`, `codex`: that agent alone.
//!
//! Baselines (each task in its own directory, each agent with the argv, env
//! and prompt its runner gives it):
//! - `bare agent`: the agent alone, in a clone made before the clock starts;
//! - `clone+agent+commit`: `git clone`, branch, the agent, `git add -A`,
//!   `git commit`;
//! - `+push+rm`: the above plus pushing the branch into the project and
//!   removing the clone, which is the rest of what the executor does per task.
//!
//! Besides wall time, each run reports the CPU time it took per task: this
//! process (the in-process server, the mocks, the bench) plus every child
//! process waited for (agents, git, xargs, sh). On a shared machine that is
//! steadier than wall time: it does not grow with other people's load.
//!
//! `cargo bench --bench scheduler` (BENCH_TASKS, default 60; BENCH_CONCURRENCY,
//! default 4; BENCH_ROUNDS, default 1; BENCH_POLL, the executor's
//! poll_interval, default 100ms; BENCH_AGENTS; BENCH_BASELINES, default
//! `bare,clone,push`, the baselines to run (the ratios need all three);
//! BENCH_ONLY=claudomator skips the baselines; BENCH_KEEP=1 keeps the
//! working directories, logs included).

#[path = "../tests/support/anthropic_mock.rs"]
mod anthropic_mock;
#[path = "../tests/support/claude_env.rs"]
mod claude_env;
#[path = "../tests/support/codex_env.rs"]
mod codex_env;
#[path = "../tests/support/gemini_env.rs"]
mod gemini_env;
#[path = "../tests/support/gemini_mock.rs"]
mod gemini_mock;
#[path = "../tests/support/http_thread.rs"]
mod http_thread;
#[path = "../tests/support/openai_mock.rs"]
mod openai_mock;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anthropic_mock::AnthropicMock;
use claude_env::{ClaudeEnv, claude_bin_path};
use claudomator::config::{Config, ExecutorSection, ProjectConfig};
use claudomator::proto as pb;
use claudomator::proto::claudomator_service_client::ClaudomatorServiceClient;
use codex_env::{CodexEnv, codex_launcher_path};
use gemini_env::{GeminiEnv, gemini_bin_path};
use gemini_mock::GeminiMock;
use openai_mock::OpenAiMock;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tonic::transport::Channel;

const PROMPT: &str = "Create hello.txt containing hi";
const CLAUDE_MODEL: &str = "claude-sonnet-4-5";
const GEMINI_MODEL: &str = "gemini-2.5-flash";
/// A model Codex knows, so it offers its apply_patch tool.
const CODEX_MODEL: &str = "gpt-5.5";

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

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Agent {
    Claude,
    Gemini,
    Codex,
}

impl Agent {
    fn name(self) -> &'static str {
        match self {
            Agent::Claude => "claude",
            Agent::Gemini => "gemini",
            Agent::Codex => "codex",
        }
    }

    fn pb(self) -> pb::AgentType {
        match self {
            Agent::Claude => pb::AgentType::Claude,
            Agent::Gemini => pb::AgentType::Gemini,
            Agent::Codex => pb::AgentType::Codex,
        }
    }

    fn installed(self) -> bool {
        match self {
            Agent::Claude => claude_bin_path().is_file(),
            Agent::Gemini => gemini_bin_path().is_file(),
            Agent::Codex => codex_launcher_path().is_file(),
        }
    }

    /// Whether the agent's stdout (JSONL) ends in a success, and the run's
    /// own duration when the agent reports one.
    fn outcome(self, jsonl: &str) -> Option<(bool, Option<f64>)> {
        let events: Vec<Value> = jsonl
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        match self {
            Agent::Claude => events
                .iter()
                .rev()
                .find(|e| e["type"] == "result")
                .map(|e| {
                    (
                        e["subtype"] == "success" && e["is_error"] != true,
                        e["duration_ms"].as_f64(),
                    )
                }),
            Agent::Gemini => events
                .iter()
                .rev()
                .find(|e| e["type"] == "result")
                .map(|e| (e["status"] == "success", e["stats"]["duration_ms"].as_f64())),
            Agent::Codex => {
                let done = events.iter().any(|e| e["type"] == "turn.completed");
                let failed = events.iter().any(|e| e["type"] == "turn.failed");
                (done || failed).then_some((done && !failed, None))
            }
        }
    }
}

/// A set of tasks: task i runs `agents[i % agents.len()]`.
#[derive(Clone)]
struct Scenario {
    name: String,
    agents: Vec<Agent>,
}

impl Scenario {
    fn agent(&self, task: usize) -> Agent {
        self.agents[task % self.agents.len()]
    }
}

/// The model servers of one run, one per agent of the scenario.
struct Mocks {
    claude: Option<AnthropicMock>,
    gemini: Option<GeminiMock>,
    codex: Option<OpenAiMock>,
}

impl Mocks {
    fn start(scenario: &Scenario) -> Mocks {
        let has = |agent| scenario.agents.contains(&agent);
        Mocks {
            claude: has(Agent::Claude).then(|| {
                AnthropicMock::start(anthropic_mock::Script::write_file("hello.txt", "hi"))
            }),
            gemini: has(Agent::Gemini)
                .then(|| GeminiMock::start(gemini_mock::Script::write_file("hello.txt", "hi"))),
            codex: has(Agent::Codex)
                .then(|| OpenAiMock::start(openai_mock::Script::write_file("hello.txt", "hi"))),
        }
    }

    /// The most requests any one of them had in flight at once.
    fn max_in_flight(&self) -> usize {
        [
            self.claude.as_ref().map(|m| m.max_in_flight()),
            self.gemini.as_ref().map(|m| m.max_in_flight()),
            self.codex.as_ref().map(|m| m.max_in_flight()),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0)
    }

    /// Model calls, all agents together.
    fn model_calls(&self) -> usize {
        self.claude.as_ref().map_or(0, |m| m.messages_calls())
            + self.gemini.as_ref().map_or(0, |m| m.model_calls())
            + self.codex.as_ref().map_or(0, |m| m.responses_calls())
    }
}

/// Each agent's environment for one run (its own home under `home`), as
/// strings, with its config files written. Gemini and Codex make no retries
/// of their own, as the server is configured below.
struct AgentEnvs {
    vars: HashMap<Agent, BTreeMap<String, String>>,
}

impl AgentEnvs {
    fn new(mocks: &Mocks, home: &Path) -> AgentEnvs {
        let strings = |vars: Vec<(String, std::ffi::OsString)>| -> BTreeMap<String, String> {
            vars.into_iter()
                .map(|(k, v)| (k, v.to_string_lossy().into_owned()))
                .collect()
        };
        let mut vars = HashMap::new();
        if let Some(mock) = &mocks.claude {
            let mut env = ClaudeEnv::new(mock.base_url(), home.join("claude"));
            env.max_retries = 1;
            std::fs::create_dir_all(env.config_dir()).unwrap();
            std::fs::create_dir_all(env.tmp_dir()).unwrap();
            vars.insert(Agent::Claude, strings(env.vars()));
        }
        if let Some(mock) = &mocks.gemini {
            let mut env = GeminiEnv::new(mock.base_url(), home.join("gemini"));
            env.max_attempts = 1;
            env.write_settings();
            std::fs::create_dir_all(env.tmp_dir()).unwrap();
            vars.insert(Agent::Gemini, strings(env.vars()));
        }
        if let Some(mock) = &mocks.codex {
            let env = CodexEnv::new(mock.base_url(), home.join("codex"));
            env.write_config();
            std::fs::create_dir_all(env.tmp_dir()).unwrap();
            // Its own HOME, as the runner gives it (Codex runs commands in a
            // login shell, which would read the user's profile).
            vars.insert(Agent::Codex, strings(env.vars()));
        }
        AgentEnvs { vars }
    }
}

/// What one run measured.
struct Run {
    label: String,
    wall: Duration,
    ok: usize,
    failed: usize,
    /// Mean time of one task, start to end, as the run itself saw it
    /// (executor: execution started_at..ended_at; xargs: the shell's clock).
    task_mean: Duration,
    /// Mean of the agents' own run durations, where they report one
    /// (claude's `duration_ms`, gemini's `stats.duration_ms`).
    agent_mean_ms: f64,
    /// Sum of task times / (wall × concurrency).
    utilization: f64,
    max_in_flight: usize,
    model_calls: usize,
    /// CPU seconds: (this process, its waited-for children).
    cpu: (f64, f64),
    /// Free-form extra line.
    note: String,
}

/// User + system CPU seconds of this process and of its children that have
/// been waited for.
fn cpu_now() -> (f64, f64) {
    let seconds = |who| {
        // SAFETY: getrusage writes into the struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut usage) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(usage.ru_utime) + tv(usage.ru_stime)
    };
    (seconds(libc::RUSAGE_SELF), seconds(libc::RUSAGE_CHILDREN))
}

fn cpu_since(start: (f64, f64)) -> (f64, f64) {
    let now = cpu_now();
    (now.0 - start.0, now.1 - start.1)
}

impl Run {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.wall.as_secs_f64()
    }

    fn cpu_per_task_ms(&self) -> f64 {
        (self.cpu.0 + self.cpu.1) * 1e3 / self.ok.max(1) as f64
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

/// `'…'` for sh.
fn quoted(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The prompt as the Gemini and Codex runners send it: the CLIs have no
/// flag for a system prompt.
fn prompt_with_system() -> String {
    format!("{PROMPT}\n\n{}", claudomator::core::executor::SYSTEM_PROMPT)
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
            Baseline::Bare => "xargs: bare agent",
            Baseline::CloneCommit => "xargs: clone+agent+commit",
            Baseline::CloneCommitPushRm => "xargs: +push+rm",
        }
    }

    /// `sh -c` body for one task: `$1` the task, `$2` its agent.
    fn script(self, envs: &AgentEnvs) -> String {
        // Each agent with its own environment, argv as its runner builds it.
        let mut run_agent = String::from("run_agent() {\ncase \"$1\" in\n");
        for (agent, vars) in &envs.vars {
            let assignments: String = vars
                .iter()
                .map(|(k, v)| format!("{k}={} ", quoted(v)))
                .collect();
            let command = match agent {
                Agent::Claude => {
                    r#""$CLAUDE" -p "$PROMPT" --output-format stream-json --verbose --permission-mode acceptEdits --model "$CLAUDE_MODEL" --append-system-prompt "$SYSPROMPT""#
                }
                Agent::Gemini => {
                    r#""$GEMINI" -p "$PROMPT_SYS" -o stream-json --approval-mode yolo -m "$GEMINI_MODEL""#
                }
                Agent::Codex => {
                    r#""$CODEX" exec --json --sandbox workspace-write --skip-git-repo-check -m "$CODEX_MODEL" "$PROMPT_SYS""#
                }
            };
            run_agent.push_str(&format!("{}) {assignments}{command} ;;\n", agent.name()));
        }
        run_agent.push_str("esac\n}\n");
        let agent = r#"run_agent "$a" </dev/null >"$ROOT/$t.jsonl" 2>"$ROOT/$t.err""#;
        let commit = r#"git add --all
git -c user.name=bench -c user.email=bench@localhost -c commit.gpgsign=false commit --quiet --no-verify -m "task $t""#;
        let body = match self {
            Baseline::Bare => format!("cd \"$ROOT/$t\"\n{agent}"),
            Baseline::CloneCommit => format!(
                "git clone --quiet --no-hardlinks \"$PROJECT\" \"$ROOT/$t\"\ncd \"$ROOT/$t\"\n\
                 git checkout --quiet -b \"claudomator/$t\"\n{agent}\n{commit}"
            ),
            Baseline::CloneCommitPushRm => format!(
                "git clone --quiet --no-hardlinks \"$PROJECT\" \"$ROOT/$t\"\ncd \"$ROOT/$t\"\n\
                 git checkout --quiet -b \"claudomator/$t\"\n{agent}\n{commit}\n\
                 git push --quiet origin \"claudomator/$t\"\ncd \"$ROOT\"\nrm -rf \"$ROOT/$t\""
            ),
        };
        // The clock is taken inside, so a task's time excludes xargs' fork of sh.
        format!(
            "set -e\n{run_agent}t=$1\na=$2\ns=$(date +%s%N)\n{body}\ne=$(date +%s%N)\necho \"$s $e\" >\"$ROOT/$t.time\"\n"
        )
    }
}

/// `xargs -P C -n 2 sh -c SCRIPT` over "task agent" pairs, against fresh
/// mocks, project and homes.
async fn run_xargs(
    kind: Baseline,
    scenario: &Scenario,
    n: usize,
    concurrency: usize,
    base: &Path,
) -> Run {
    let dir = base.join(kind.label().replace([' ', ':', '+'], "_"));
    let project = dir.join("project");
    let root = dir.join("work");
    init_git_repo(&project);
    std::fs::create_dir_all(&root).unwrap();
    let ids: Vec<String> = (1..=n).map(|i| format!("t{i:04}")).collect();
    if kind == Baseline::Bare {
        // The same kind of working directory the agent sees under
        // claudomator, made before the clock starts.
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
    let mocks = Mocks::start(scenario);
    let envs = AgentEnvs::new(&mocks, &dir.join("home"));

    let mut cmd = tokio::process::Command::new("xargs");
    cmd.args(["-P", &concurrency.to_string(), "-n", "2", "sh", "-c"])
        .arg(kind.script(&envs))
        .arg("sh")
        .env("CLAUDE", claude_bin_path())
        .env("GEMINI", gemini_bin_path())
        .env("CODEX", codex_launcher_path())
        .env("PROMPT", PROMPT)
        .env("PROMPT_SYS", prompt_with_system())
        .env("CLAUDE_MODEL", CLAUDE_MODEL)
        .env("GEMINI_MODEL", GEMINI_MODEL)
        .env("CODEX_MODEL", CODEX_MODEL)
        .env("SYSPROMPT", claudomator::core::executor::SYSTEM_PROMPT)
        .env("ROOT", &root)
        .env("PROJECT", &project)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let input: String = ids
        .iter()
        .enumerate()
        .map(|(i, id)| format!("{id} {}\n", scenario.agent(i).name()))
        .collect();
    let cpu = cpu_now();
    let started = Instant::now();
    let mut child = cmd.spawn().expect("xargs runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let wall = started.elapsed();
    let cpu = cpu_since(cpu);
    let stderr = String::from_utf8_lossy(&out.stderr);

    let (mut ok, mut failed, mut task_total) = (0, 0, 0u64);
    let mut agent_ms = Vec::new();
    let mut first_error = String::new();
    for (i, id) in ids.iter().enumerate() {
        let time = std::fs::read_to_string(root.join(format!("{id}.time"))).unwrap_or_default();
        let jsonl = std::fs::read_to_string(root.join(format!("{id}.jsonl"))).unwrap_or_default();
        let outcome = scenario.agent(i).outcome(&jsonl);
        let wrote = kind == Baseline::CloneCommitPushRm
            || std::fs::read_to_string(root.join(id).join("hello.txt"))
                .is_ok_and(|s| s.trim() == "hi");
        let times: Vec<u64> = time
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        match (times.as_slice(), outcome) {
            ([s, e], Some((true, ms))) if wrote => {
                ok += 1;
                task_total += e - s;
                agent_ms.extend(ms);
            }
            _ => {
                failed += 1;
                if first_error.is_empty() {
                    let err =
                        std::fs::read_to_string(root.join(format!("{id}.err"))).unwrap_or_default();
                    first_error = format!(
                        "{id} ({}): {}",
                        scenario.agent(i).name(),
                        err.lines().last().unwrap_or("")
                    );
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
        agent_mean_ms: mean(&agent_ms),
        utilization: task_total as f64 / 1e9 / (wall.as_secs_f64() * concurrency as f64),
        max_in_flight: mocks.max_in_flight(),
        model_calls: mocks.model_calls(),
        cpu,
        note,
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn millis(ts: &Option<prost_types::Timestamp>) -> i64 {
    ts.as_ref()
        .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

/// The server's config: each agent of the scenario pointed at its mock, as
/// tests/agents.rs does.
fn server_config(
    dir: &Path,
    project: &Path,
    concurrency: usize,
    poll: &str,
    mocks: &Mocks,
) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        projects: vec![ProjectConfig::new("bench", project)],
        executor: ExecutorSection {
            enabled: true,
            max_concurrent: concurrency,
            poll_interval: poll.into(),
            ..Default::default()
        },
        ..Config::default()
    };
    let envs = AgentEnvs::new(mocks, &dir.join("home"));
    if let Some(vars) = envs.vars.get(&Agent::Claude) {
        config.agents.claude.command = claude_bin_path();
        config.agents.claude.env = vars.clone();
        config.agents.claude.model = CLAUDE_MODEL.into();
    }
    if let Some(mock) = &mocks.gemini {
        let gemini = &mut config.agents.gemini;
        gemini.command = gemini_bin_path();
        gemini.base_url = mock.base_url();
        gemini.model = GEMINI_MODEL.into();
        gemini.max_retries = Some(0);
        gemini.home = dir.join("home/gemini");
        gemini
            .env
            .insert("GEMINI_API_KEY".into(), "mock-gemini-key".into());
    }
    if let Some(mock) = &mocks.codex {
        let codex = &mut config.agents.codex;
        codex.command = codex_launcher_path();
        codex.base_url = mock.base_url();
        codex.model = CODEX_MODEL.into();
        codex.max_retries = Some(0);
        codex.home = dir.join("home/codex/.codex");
        codex.api_key_env = CodexEnv::API_KEY_VAR.into();
        codex
            .env
            .insert(CodexEnv::API_KEY_VAR.into(), "sk-mock".into());
    }
    config.validate().expect("bench config is valid");
    config
}

/// The N tasks through an in-process claudomator server.
async fn run_claudomator(
    scenario: &Scenario,
    n: usize,
    concurrency: usize,
    poll: &str,
    base: &Path,
) -> Run {
    let dir = base.join("claudomator");
    let project = dir.join("project");
    init_git_repo(&project);
    let mocks = Mocks::start(scenario);
    let config = server_config(&dir, &project, concurrency, poll, &mocks);
    let server = claudomator::app::start(config)
        .await
        .expect("server starts");
    let channel = Channel::from_shared(format!("http://{}", server.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ClaudomatorServiceClient::new(channel);

    let mut agent_of = HashMap::new();
    let cpu = cpu_now();
    let started_ms = now_unix_ms();
    let started = Instant::now();
    for i in 0..n {
        let agent = scenario.agent(i);
        let spec = pb::TaskSpec {
            name: format!("hello {i}"),
            instructions: PROMPT.into(),
            project: "bench".into(),
            agent: Some(pb::AgentSettings {
                r#type: agent.pb() as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let task = client
            .submit_task(pb::SubmitTaskRequest {
                spec: Some(spec),
                ..Default::default()
            })
            .await
            .expect("submit")
            .into_inner()
            .task
            .unwrap();
        agent_of.insert(task.id, agent);
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
    let cpu = cpu_since(cpu);
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
    let mut agent_ms = Vec::new();
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
            // The executor's log keeps the agent's line in `raw`.
            let raw: String = log
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter_map(|v| v["raw"].as_str().map(str::to_string))
                .collect::<Vec<_>>()
                .join("\n");
            if let Some((_, Some(ms))) = agent_of[&task.id].outcome(&raw) {
                agent_ms.push(ms);
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
        agent_mean_ms: mean(&agent_ms),
        utilization: task_total as f64 / 1e3 / (wall.as_secs_f64() * concurrency as f64),
        max_in_flight: mocks.max_in_flight(),
        model_calls: mocks.model_calls(),
        cpu,
        note,
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

fn print_run(r: &Run) {
    println!(
        "{:<28} wall {:>8.3} s  {:>6.2} tasks/s  ok {:>3} failed {:>2}  task mean {:>7.0} ms  \
         agent duration_ms mean {:>6.0}  slot use {:>5.1}%  CPU per task {:>5.0} ms (this process {:>4.0} ms)  \
         mock max in flight {} ({} model calls)  load {}",
        r.label,
        r.wall.as_secs_f64(),
        r.rate(),
        r.ok,
        r.failed,
        r.task_mean.as_secs_f64() * 1e3,
        r.agent_mean_ms,
        r.utilization * 100.0,
        r.cpu_per_task_ms(),
        r.cpu.0 * 1e3 / r.ok.max(1) as f64,
        r.max_in_flight,
        r.model_calls,
        load_average(),
    );
    if !r.note.is_empty() {
        println!("{:<28} {}", "", r.note);
    }
}

/// claudomator's wall time and CPU per task over one baseline's.
#[derive(Clone, Copy)]
struct Ratio {
    baseline: Baseline,
    wall: f64,
    cpu: f64,
}

/// One round of a scenario: the baselines and claudomator (in reverse
/// order every other round). Returns claudomator's ratios to each baseline.
async fn round(
    scenario: &Scenario,
    baselines: &[Baseline],
    n: usize,
    concurrency: usize,
    poll: &str,
    dir: &Path,
    reverse: bool,
) -> Vec<Ratio> {
    let mut order: Vec<Option<Baseline>> = baselines.iter().copied().map(Some).collect();
    order.push(None);
    if reverse {
        order.reverse();
    }
    let mut runs: Vec<(Option<Baseline>, Run)> = Vec::new();
    for which in order {
        let run = match which {
            Some(kind) => run_xargs(kind, scenario, n, concurrency, dir).await,
            None => run_claudomator(scenario, n, concurrency, poll, dir).await,
        };
        print_run(&run);
        runs.push((which, run));
    }
    let at = runs.iter().position(|(w, _)| w.is_none()).unwrap();
    let ours = runs.remove(at).1;
    let ratios: Vec<Ratio> = runs
        .iter()
        .filter_map(|(which, run)| {
            Some(Ratio {
                baseline: (*which)?,
                wall: ours.wall.as_secs_f64() / run.wall.as_secs_f64(),
                cpu: ours.cpu_per_task_ms() / run.cpu_per_task_ms().max(1e-9),
            })
        })
        .collect();
    print_ratios(&scenario.name, "", &ratios);
    println!(
        "{}: mock max in flight {} (<= {concurrency}: {})",
        scenario.name,
        ours.max_in_flight,
        if ours.max_in_flight <= concurrency {
            "yes"
        } else {
            "no"
        }
    );
    ratios
}

/// One line per baseline; the target is on clone+agent+commit's wall ratio.
fn print_ratios(scenario: &str, what: &str, ratios: &[Ratio]) {
    for ratio in ratios {
        let target = if ratio.baseline == Baseline::CloneCommit {
            format!(
                " (target <= 1.10: {})",
                if ratio.wall <= 1.10 { "met" } else { "missed" }
            )
        } else {
            String::new()
        };
        println!(
            "{scenario}: {what}claudomator/{}: wall {:.3}{target}, CPU per task {:.3}",
            ratio.baseline.label().trim_start_matches("xargs: "),
            ratio.wall,
            ratio.cpu,
        );
    }
}

#[tokio::main]
async fn main() {
    let n = env_number("BENCH_TASKS", 60) as usize;
    let concurrency = env_number("BENCH_CONCURRENCY", 4) as usize;
    let rounds = env_number("BENCH_ROUNDS", 1).max(1) as usize;
    let poll = std::env::var("BENCH_POLL").unwrap_or_else(|_| "100ms".into());
    let only_claudomator = std::env::var("BENCH_ONLY").is_ok_and(|v| v == "claudomator");
    let baselines: Vec<Baseline> = std::env::var("BENCH_BASELINES")
        .unwrap_or_else(|_| "bare,clone,push".into())
        .split(',')
        .filter_map(|name| match name.trim() {
            "bare" => Some(Baseline::Bare),
            "clone" => Some(Baseline::CloneCommit),
            "push" => Some(Baseline::CloneCommitPushRm),
            other => {
                println!("unknown baseline {other} (bare, clone, push)");
                None
            }
        })
        .collect();
    let mut scenarios = Vec::new();
    for name in std::env::var("BENCH_AGENTS")
        .unwrap_or_else(|_| "claude,mix".into())
        .split(',')
    {
        let agents = match name.trim() {
            "claude" => vec![Agent::Claude],
            "gemini" => vec![Agent::Gemini],
            "codex" => vec![Agent::Codex],
            "mix" => vec![Agent::Claude, Agent::Gemini, Agent::Codex],
            other => {
                println!("unknown scenario {other} (claude, gemini, codex, mix)");
                continue;
            }
        };
        if let Some(missing) = agents.iter().find(|a| !a.installed()) {
            println!(
                "SKIPPED scenario {name}: the {} CLI is not installed; run scripts/install-agents",
                missing.name()
            );
            continue;
        }
        scenarios.push(Scenario {
            name: name.trim().into(),
            agents,
        });
    }
    let base = tempfile::tempdir().unwrap();
    if std::env::var_os("BENCH_KEEP").is_some() {
        println!("keeping {}", base.path().display());
    }
    println!(
        "claudomator scheduler bench: {n} tasks per scenario, concurrency {concurrency}, {rounds} round(s), \
         {} cores, executor poll_interval {poll}; claude {}, gemini {}, codex {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        claude_env::CLAUDE_CODE_VERSION,
        gemini_env::GEMINI_CLI_VERSION,
        codex_env::CODEX_CLI_VERSION,
    );

    // Warm-up (not measured): page the binaries in, first-run setup.
    for scenario in &scenarios {
        let dir = base.path().join(format!("warmup-{}", scenario.name));
        let tasks = scenario.agents.len().max(2);
        let warm = run_xargs(Baseline::Bare, scenario, tasks, tasks, &dir).await;
        println!(
            "warm-up {}: {} ok, {} failed in {:.2} s{}",
            scenario.name,
            warm.ok,
            warm.failed,
            warm.wall.as_secs_f64(),
            if warm.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", warm.note)
            }
        );
    }

    let mut ratios: HashMap<String, Vec<Ratio>> = HashMap::new();
    for round_index in 0..rounds {
        for scenario in &scenarios {
            let dir = base
                .path()
                .join(format!("round{round_index}-{}", scenario.name));
            println!(
                "\n== round {} {} ({})",
                round_index + 1,
                scenario.name,
                scenario
                    .agents
                    .iter()
                    .map(|a| a.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if only_claudomator {
                print_run(&run_claudomator(scenario, n, concurrency, &poll, &dir).await);
                continue;
            }
            // Every other round in reverse order, so a drift in the
            // machine's load (it is shared) does not always favour one side.
            let r = round(
                scenario,
                &baselines,
                n,
                concurrency,
                &poll,
                &dir,
                round_index % 2 == 1,
            )
            .await;
            ratios.entry(scenario.name.clone()).or_default().extend(r);
        }
    }
    if std::env::var_os("BENCH_KEEP").is_some() {
        let _ = base.keep();
    }
    if rounds > 1 {
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!();
        for scenario in &scenarios {
            let Some(ratios) = ratios.get(&scenario.name) else {
                continue;
            };
            let medians: Vec<Ratio> = baselines
                .iter()
                .map(|&baseline| {
                    let of = |f: fn(&Ratio) -> f64| {
                        median(
                            ratios
                                .iter()
                                .filter(|r| r.baseline == baseline)
                                .map(f)
                                .collect(),
                        )
                    };
                    Ratio {
                        baseline,
                        wall: of(|r| r.wall),
                        cpu: of(|r| r.cpu),
                    }
                })
                .collect();
            print_ratios(
                &scenario.name,
                &format!("median of {rounds} rounds: "),
                &medians,
            );
        }
    }
}
