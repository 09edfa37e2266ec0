//! The real `claude` CLI (Claude Code, installed by `scripts/install-agents`)
//! run headless and fully offline against the scripted Anthropic mock in
//! `tests/support/anthropic_mock.rs`. Each test gets its own mock, its own
//! HOME/CLAUDE_CONFIG_DIR/TMPDIR and its own temp git repo as the cwd.
//!
//! Without the CLI the tests print `SKIPPED` and pass, unless `CI` is set.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::anthropic_mock::{AnthropicMock, Script};
use support::claude_env::{ClaudeArgs, ClaudeEnv, claude_command, claude_or_skip};
use tempfile::TempDir;

/// No single run may take longer than this; a hang fails the test.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// A temp dir with a git repo (the CLI's cwd) and a home for the CLI.
struct Sandbox {
    _dir: TempDir,
    repo: PathBuf,
    home: PathBuf,
}

fn sandbox() -> Sandbox {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    let out = std::process::Command::new("git")
        .args(["init", "-q", "."])
        .current_dir(&repo)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git init: {out:?}");
    // Canonical, because the CLI reports (and the mock sees) the real path.
    let repo = repo.canonicalize().unwrap();
    Sandbox {
        _dir: dir,
        repo,
        home,
    }
}

/// What a finished run printed.
struct Run {
    status: ExitStatus,
    events: Vec<Value>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    fn result(&self) -> &Value {
        let last = self
            .events
            .last()
            .unwrap_or_else(|| panic!("no events\n{self}"));
        assert_eq!(last["type"], "result", "last event is not a result\n{self}");
        last
    }

    fn events_of(&self, kind: &str, subtype: Option<&str>) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["type"] == kind && subtype.is_none_or(|s| e["subtype"] == s))
            .collect()
    }

    fn init(&self) -> &Value {
        self.events_of("system", Some("init"))
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no system/init event\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit: {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.status.code(),
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }
}

fn spawn(bin: &Path, sb: &Sandbox, mock: &AnthropicMock, args: &ClaudeArgs, retries: u32) -> Child {
    let mut env = ClaudeEnv::new(mock.base_url(), &sb.home);
    env.max_retries = retries;
    claude_command(bin, &sb.repo, args, &env)
        .spawn()
        .expect("spawn claude")
}

/// Waits for `child` (killing it after `timeout`), then parses its stdout
/// as stream-json lines.
fn finish(mut child: Child, started: Instant, timeout: Duration) -> Run {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let status = child.wait().unwrap();
            let run = Run {
                status,
                events: Vec::new(),
                stdout: out.join().unwrap(),
                stderr: err.join().unwrap(),
                elapsed: started.elapsed(),
            };
            panic!("claude did not finish within {timeout:?}; killed\n{run}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    let events = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("bad stream-json line {l:?}: {e}"))
        })
        .collect();
    Run {
        status,
        events,
        stdout,
        stderr,
        elapsed: started.elapsed(),
    }
}

fn run(bin: &Path, sb: &Sandbox, mock: &AnthropicMock, args: &ClaudeArgs, retries: u32) -> Run {
    let started = Instant::now();
    let child = spawn(bin, sb, mock, args, retries);
    let run = finish(child, started, RUN_TIMEOUT);
    eprintln!("claude {:?} took {:?}", args.to_args(), run.elapsed);
    eprintln!("mock saw:\n{}", mock.describe_requests());
    run
}

fn write_script() -> Script {
    Script::write_file("hello.txt", "hi from the mock\n")
}

fn assert_success(run: &Run, sb: &Sandbox) {
    assert!(run.status.success(), "claude failed\n{run}");
    let result = run.result();
    assert_eq!(result["subtype"], "success", "{run}");
    assert_eq!(result["is_error"], false, "{run}");
    assert!(result["total_cost_usd"].as_f64().unwrap() > 0.0, "{run}");
    let session = result["session_id"].as_str().unwrap();
    assert!(!session.is_empty(), "{run}");
    assert_eq!(run.init()["session_id"], session, "{run}");
    assert_eq!(run.init()["cwd"], sb.repo.to_str().unwrap(), "{run}");
}

#[test]
fn writes_the_file_and_ends_with_a_summary() {
    let Some(bin) = claude_or_skip("writes_the_file_and_ends_with_a_summary") else {
        return;
    };
    let sb = sandbox();
    let mock = AnthropicMock::start(write_script());
    let run = run(&bin, &sb, &mock, &ClaudeArgs::new("Create hello.txt"), 2);

    assert_success(&run, &sb);
    let result = run.result();
    assert!(result["num_turns"].as_u64().unwrap() >= 2, "{run}");
    assert!(
        result["result"].as_str().unwrap().contains("## Summary"),
        "{run}"
    );
    assert_eq!(
        std::fs::read_to_string(sb.repo.join("hello.txt")).unwrap(),
        "hi from the mock\n"
    );
    // The stream shows the tool call and its result.
    let tool_use = run
        .events_of("assistant", None)
        .into_iter()
        .flat_map(|e| e["message"]["content"].as_array().unwrap().iter())
        .find(|b| b["type"] == "tool_use")
        .cloned()
        .unwrap_or_else(|| panic!("no tool_use\n{run}"));
    assert_eq!(tool_use["name"], "Write");
    assert!(!run.events_of("user", None).is_empty(), "{run}");

    // What went over the wire.
    let session = result["session_id"].as_str().unwrap();
    let calls = mock.message_requests();
    assert_eq!(calls.len(), 2, "{}", mock.describe_requests());
    for call in &calls {
        assert_eq!(call.query.as_deref(), Some("beta=true"));
        assert_eq!(call.header("x-api-key"), Some("sk-ant-mock"));
        assert_eq!(call.header("anthropic-version"), Some("2023-06-01"));
        assert!(
            call.header("anthropic-beta")
                .unwrap()
                .contains("claude-code-20250219")
        );
        assert_eq!(call.header("x-claude-code-session-id"), Some(session));
        let body = call.body.as_ref().unwrap();
        assert_eq!(body["model"], "claude-sonnet-4-5");
        assert_eq!(body["stream"], true);
        assert!(call.tool_names().iter().any(|t| t == "Write"));
    }
    assert_eq!(mock.streams_completed(), 2);
    assert_eq!(mock.streams_aborted(), 0);
    assert_eq!(mock.max_in_flight(), 1);
    let mut paths: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    paths.sort();
    paths.dedup();
    eprintln!("distinct requests: {paths:?}");
}

#[test]
fn resume_keeps_the_session_and_sends_the_history() {
    let Some(bin) = claude_or_skip("resume_keeps_the_session_and_sends_the_history") else {
        return;
    };
    let sb = sandbox();
    let mock = AnthropicMock::start(write_script());
    let first = run(&bin, &sb, &mock, &ClaudeArgs::new("Create hello.txt"), 2);
    assert_success(&first, &sb);
    let session = first.result()["session_id"].as_str().unwrap().to_string();

    let mut args = ClaudeArgs::new("The answer is 42.");
    args.resume = Some(session.clone());
    let second = run(&bin, &sb, &mock, &args, 2);
    assert_success(&second, &sb);
    assert_eq!(second.result()["session_id"], session.as_str(), "{second}");
    assert!(
        second.result()["result"]
            .as_str()
            .unwrap()
            .contains("resumed session"),
        "{second}"
    );
    let last = mock.message_requests().pop().unwrap();
    assert!(last.messages().len() >= 5, "{}", mock.describe_requests());
}

#[test]
fn max_turns_one_ends_with_error_max_turns() {
    let Some(bin) = claude_or_skip("max_turns_one_ends_with_error_max_turns") else {
        return;
    };
    let sb = sandbox();
    let mock = AnthropicMock::start(Script::ManyTurns);
    let mut args = ClaudeArgs::new("Keep writing files");
    args.max_turns = Some(1);
    let run = run(&bin, &sb, &mock, &args, 2);

    let result = run.result();
    assert_eq!(result["subtype"], "error_max_turns", "{run}");
    assert_eq!(result["is_error"], true, "{run}");
    assert_eq!(run.status.code(), Some(1), "{run}");
    // The one allowed turn's tool call did run.
    assert!(sb.repo.join("turn-1.txt").is_file(), "{run}");
}

#[test]
fn rate_limited_twice_then_succeeds_after_retries() {
    let Some(bin) = claude_or_skip("rate_limited_twice_then_succeeds_after_retries") else {
        return;
    };
    let sb = sandbox();
    let mock = AnthropicMock::start(Script::rate_limited_then(2, 1, write_script()));
    let run = run(&bin, &sb, &mock, &ClaudeArgs::new("Create hello.txt"), 3);

    assert_success(&run, &sb);
    assert!(
        run.result()["result"]
            .as_str()
            .unwrap()
            .contains("## Summary"),
        "{run}"
    );
    let retries = run.events_of("system", Some("api_retry"));
    assert_eq!(retries.len(), 2, "{run}");
    for retry in &retries {
        assert_eq!(retry["error_status"], 429, "{run}");
        assert_eq!(retry["error"], "rate_limit", "{run}");
        // retry-after: 1 is honoured.
        assert!(retry["retry_delay_ms"].as_f64().unwrap() >= 1000.0, "{run}");
    }
    let statuses: Vec<u16> = mock.message_requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [429, 429, 200, 200],
        "{}",
        mock.describe_requests()
    );
    assert_eq!(
        std::fs::read_to_string(sb.repo.join("hello.txt")).unwrap(),
        "hi from the mock\n"
    );
}

#[test]
fn always_overloaded_fails_with_529() {
    let Some(bin) = claude_or_skip("always_overloaded_fails_with_529") else {
        return;
    };
    let sb = sandbox();
    let mock = AnthropicMock::start(Script::Overloaded);
    let run = run(&bin, &sb, &mock, &ClaudeArgs::new("Create hello.txt"), 1);

    assert_eq!(run.status.code(), Some(1), "{run}");
    let result = run.result();
    assert_eq!(result["is_error"], true, "{run}");
    assert_eq!(result["api_error_status"], 529, "{run}");
    assert!(result["result"].as_str().unwrap().contains("529"), "{run}");
    assert_eq!(run.events_of("system", Some("api_retry")).len(), 1, "{run}");
    // One try plus CLAUDE_CODE_MAX_RETRIES=1 retry.
    assert_eq!(mock.messages_calls(), 2, "{}", mock.describe_requests());
    assert!(!sb.repo.join("hello.txt").exists());
}

#[test]
fn tiny_budget_ends_with_error_max_budget_usd() {
    let Some(bin) = claude_or_skip("tiny_budget_ends_with_error_max_budget_usd") else {
        return;
    };
    let sb = sandbox();
    let mock = AnthropicMock::start(write_script());
    let mut args = ClaudeArgs::new("Create hello.txt");
    args.max_budget_usd = Some(0.0001);
    let run = run(&bin, &sb, &mock, &args, 2);

    let result = run.result();
    assert_eq!(result["subtype"], "error_max_budget_usd", "{run}");
    assert_eq!(result["is_error"], true, "{run}");
    assert!(result["total_cost_usd"].as_f64().unwrap() > 0.0001, "{run}");
    assert_eq!(run.status.code(), Some(1), "{run}");
}

#[test]
fn a_slow_stream_can_be_cut_by_killing_the_cli() {
    let Some(bin) = claude_or_skip("a_slow_stream_can_be_cut_by_killing_the_cli") else {
        return;
    };
    let sb = sandbox();
    let mock = AnthropicMock::start(Script::Slow {
        delay_per_event: Duration::from_millis(200),
        chunks: 10_000,
    });
    let started = Instant::now();
    let mut child = spawn(&bin, &sb, &mock, &ClaudeArgs::new("Take your time"), 0);
    assert!(
        mock.wait_until(Duration::from_secs(60), |m| m.in_flight() == 1),
        "no request in flight\n{}",
        mock.describe_requests()
    );
    // Let a few deltas through, then cancel the run mid-stream.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(child.try_wait().unwrap(), None, "claude ended early");
    child.kill().unwrap();
    let run = finish(child, started, RUN_TIMEOUT);
    assert!(!run.status.success());
    assert!(
        mock.wait_until(Duration::from_secs(10), |m| m.streams_aborted() == 1
            && m.in_flight() == 0),
        "the mock did not see the stream cut\n{}",
        mock.describe_requests()
    );
    assert_eq!(mock.streams_completed(), 0);
    eprintln!("slow run cut after {:?}", run.elapsed);
}

#[test]
fn two_concurrent_slow_runs_overlap_at_the_mock() {
    let Some(bin) = claude_or_skip("two_concurrent_slow_runs_overlap_at_the_mock") else {
        return;
    };
    let mock = AnthropicMock::start(Script::Slow {
        delay_per_event: Duration::from_millis(100),
        chunks: 30,
    });
    let (a, b) = (sandbox(), sandbox());
    let started = Instant::now();
    let args = ClaudeArgs::new("Answer slowly");
    let ca = spawn(&bin, &a, &mock, &args, 0);
    let cb = spawn(&bin, &b, &mock, &args, 0);
    let (ra, rb) = (
        finish(ca, started, RUN_TIMEOUT),
        finish(cb, started, RUN_TIMEOUT),
    );
    for (run, sb) in [(&ra, &a), (&rb, &b)] {
        assert_success(run, sb);
        assert!(
            run.result()["result"]
                .as_str()
                .unwrap()
                .contains("## Summary"),
            "{run}"
        );
    }
    assert_eq!(mock.max_in_flight(), 2, "{}", mock.describe_requests());
    assert_eq!(mock.streams_completed(), 2);
    eprintln!("two slow runs took {:?}", started.elapsed());
}
