//! The real `codex` CLI (Codex CLI, installed by `scripts/install-agents`)
//! run headless (`codex exec --json`) and fully offline against the scripted
//! Responses API mock in `tests/support/openai_mock.rs`. Each test gets its
//! own mock, its own HOME/CODEX_HOME/TMPDIR and its own temp git repo as the
//! cwd.
//!
//! Without the CLI the tests print `SKIPPED` and pass, unless `CI` is set.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::agent_process::{Run, Sandbox, finish};
use support::codex_env::{CodexArgs, CodexEnv, codex_command, codex_or_skip};
use support::openai_mock::{INPUT_TOKENS, OUTPUT_TOKENS, OpenAiMock, Script};

/// No single run may take longer than this; a hang fails the test.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn spawn(bin: &Path, sb: &Sandbox, args: &CodexArgs, env: &CodexEnv) -> Child {
    codex_command(bin, &sb.repo, args, env)
        .spawn()
        .expect("spawn codex")
}

fn run_with(bin: &Path, sb: &Sandbox, mock: &OpenAiMock, args: &CodexArgs, env: &CodexEnv) -> Run {
    let started = Instant::now();
    let child = spawn(bin, sb, args, env);
    let run = finish("codex", child, started, RUN_TIMEOUT);
    eprintln!(
        "codex {:?} took {:?}, exit {:?}",
        args.to_args(),
        run.elapsed,
        run.code()
    );
    eprintln!("mock saw:\n{}", mock.describe_requests());
    eprintln!("--- stdout\n{}--- stderr\n{}", run.stdout, run.stderr);
    run
}

fn run(bin: &Path, sb: &Sandbox, mock: &OpenAiMock, args: &CodexArgs) -> Run {
    run_with(
        bin,
        sb,
        mock,
        args,
        &CodexEnv::new(mock.base_url(), &sb.home),
    )
}

fn write_script() -> Script {
    Script::write_file("hello.txt", "hi from the mock\n")
}

/// `item.completed` items of this `item.type`.
fn completed_items<'a>(run: &'a Run, kind: &str) -> Vec<&'a Value> {
    run.events_of("item.completed")
        .into_iter()
        .map(|e| &e["item"])
        .filter(|i| i["type"] == kind)
        .collect()
}

/// The final text: the last `agent_message`.
fn last_message(run: &Run) -> String {
    completed_items(run, "agent_message")
        .last()
        .and_then(|i| i["text"].as_str())
        .unwrap_or_else(|| panic!("no agent_message\n{run}"))
        .to_string()
}

fn thread_id(run: &Run) -> String {
    assert_eq!(run.events[0]["type"], "thread.started", "{run}");
    run.events[0]["thread_id"].as_str().unwrap().to_string()
}

fn assert_success(run: &Run) {
    assert_eq!(run.code(), Some(0), "codex failed\n{run}");
    let id = thread_id(run);
    assert_eq!(id.len(), 36, "a UUID: {id}\n{run}");
    assert_eq!(run.events[1]["type"], "turn.started", "{run}");
    let last = run.last();
    assert_eq!(last["type"], "turn.completed", "{run}");
    assert!(completed_items(run, "error").is_empty(), "{run}");
    assert!(run.events_of("error").is_empty(), "{run}");
}

#[test]
fn writes_the_file_with_apply_patch_and_ends_with_a_summary() {
    let Some(bin) = codex_or_skip("writes_the_file_with_apply_patch_and_ends_with_a_summary")
    else {
        return;
    };
    let sb = Sandbox::new();
    let mock = OpenAiMock::start(write_script());
    let mut args = CodexArgs::new("Create hello.txt");
    let last_message_file = sb.home.join("last-message.txt");
    args.output_last_message = Some(last_message_file.clone());
    let run = run(&bin, &sb, &mock, &args);

    assert_success(&run);
    assert_eq!(
        run.types(),
        [
            "thread.started",
            "turn.started",
            "item.completed",
            "item.started",
            "item.completed",
            "item.completed",
            "turn.completed"
        ],
        "{run}"
    );
    let messages = completed_items(&run, "agent_message");
    assert_eq!(messages.len(), 2, "{run}");
    assert_eq!(messages[0]["text"], "I'll create hello.txt.", "{run}");
    let text = last_message(&run);
    assert!(text.contains("## Summary"), "{run}");
    assert_eq!(
        std::fs::read_to_string(&last_message_file).unwrap(),
        text,
        "-o writes the last message"
    );

    let started = &run.first("item.started")["item"];
    assert_eq!(started["type"], "file_change", "{run}");
    assert_eq!(started["status"], "in_progress", "{run}");
    let change = completed_items(&run, "file_change")[0];
    assert_eq!(change["id"], started["id"], "{run}");
    assert_eq!(change["status"], "completed", "{run}");
    assert_eq!(
        change["changes"][0]["path"],
        sb.repo.join("hello.txt").to_str().unwrap(),
        "{run}"
    );
    assert_eq!(change["changes"][0]["kind"], "add", "{run}");
    assert_eq!(sb.read("hello.txt").as_deref(), Some("hi from the mock\n"));

    // Usage: the sum over both model calls.
    let usage = &run.last()["usage"];
    assert_eq!(usage["input_tokens"], 2 * INPUT_TOKENS, "{run}");
    assert_eq!(usage["output_tokens"], 2 * OUTPUT_TOKENS, "{run}");
    assert_eq!(usage["cached_input_tokens"], 0, "{run}");
    assert_eq!(usage["reasoning_output_tokens"], 0, "{run}");

    // What went over the wire: two streamed turns, nothing else.
    let thread = thread_id(&run);
    let calls = mock.responses_requests();
    assert_eq!(calls.len(), 2, "{}", mock.describe_requests());
    for call in &calls {
        assert_eq!(call.path, "/v1/responses");
        assert_eq!(call.header("authorization"), Some("Bearer sk-mock"));
        assert_eq!(call.header("originator"), Some("codex_exec"));
        assert_eq!(call.header("accept"), Some("text/event-stream"));
        assert_eq!(call.header("session-id"), Some(thread.as_str()));
        assert_eq!(call.header("thread-id"), Some(thread.as_str()));
        assert!(
            call.header("user-agent")
                .unwrap()
                .starts_with("codex_exec/0.169.0"),
            "{:?}",
            call.headers
        );
        let body = call.body.as_ref().unwrap();
        assert_eq!(body["model"], "gpt-5.5");
        assert_eq!(body["stream"], true);
        assert_eq!(body["store"], false);
        let tools = call.tool_names();
        assert!(tools.iter().any(|t| t == "apply_patch"), "{tools:?}");
        assert!(tools.iter().any(|t| t == "exec_command"), "{tools:?}");
    }
    assert_eq!(
        calls[1].input_kinds().last().map(String::as_str),
        Some("custom_tool_call_output"),
        "{}",
        mock.describe_requests()
    );
    assert_eq!(mock.streams_completed(), 2);
    assert_eq!(mock.streams_aborted(), 0);
    assert_eq!(mock.max_in_flight(), 1);
    assert_eq!(mock.requests().len(), 2, "{}", mock.describe_requests());
    // TMPDIR keeps Codex's scratch dirs inside the sandbox.
    let scratch: Vec<String> = sb
        .home
        .join("tmp")
        .read_dir()
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    eprintln!("codex scratch in TMPDIR: {scratch:?}");
    assert!(!scratch.is_empty());
}

#[test]
fn writes_the_file_with_a_shell_command() {
    let Some(bin) = codex_or_skip("writes_the_file_with_a_shell_command") else {
        return;
    };
    let sb = Sandbox::new();
    let mock = OpenAiMock::start(Script::shell_write_file("hello.txt", "hi from the shell\n"));
    let run = run(&bin, &sb, &mock, &CodexArgs::new("Create hello.txt"));

    assert_success(&run);
    let started = &run.first("item.started")["item"];
    assert_eq!(started["type"], "command_execution", "{run}");
    assert_eq!(started["status"], "in_progress", "{run}");
    assert_eq!(started["exit_code"], Value::Null, "{run}");
    let done = completed_items(&run, "command_execution")[0];
    assert_eq!(done["status"], "completed", "{run}");
    assert_eq!(done["exit_code"], 0, "{run}");
    assert!(
        done["command"].as_str().unwrap().contains("hello.txt"),
        "{run}"
    );
    assert_eq!(sb.read("hello.txt").as_deref(), Some("hi from the shell\n"));
    assert!(last_message(&run).contains("## Summary"), "{run}");
    assert_eq!(
        mock.responses_requests()[1]
            .input_kinds()
            .last()
            .map(String::as_str),
        Some("function_call_output"),
        "{}",
        mock.describe_requests()
    );
}

#[test]
fn resume_keeps_the_thread_and_sends_the_history() {
    let Some(bin) = codex_or_skip("resume_keeps_the_thread_and_sends_the_history") else {
        return;
    };
    let sb = Sandbox::new();
    let mock = OpenAiMock::start(write_script());
    let first = run(&bin, &sb, &mock, &CodexArgs::new("Create hello.txt"));
    assert_success(&first);
    let thread = thread_id(&first);

    let mut args = CodexArgs::new("The answer is 42.");
    args.resume = Some(thread.clone());
    let second = run(&bin, &sb, &mock, &args);
    assert_success(&second);
    assert_eq!(thread_id(&second), thread, "{second}");
    assert!(
        last_message(&second).contains("resumed session"),
        "{second}"
    );
    let last = mock.responses_requests().pop().unwrap();
    let kinds = last.input_kinds();
    eprintln!("resumed input: {kinds:?}");
    assert!(
        kinds.iter().any(|k| k == "custom_tool_call"),
        "the history went to the model: {kinds:?}"
    );
    assert_eq!(kinds.last().map(String::as_str), Some("message:user"));
    assert_eq!(last.header("session-id"), Some(thread.as_str()));
    // turn.completed's usage counts the whole thread, not just this turn.
    let usage = &second.last()["usage"];
    eprintln!("resumed usage: {usage}");
    assert_eq!(usage["input_tokens"], 3 * INPUT_TOKENS, "{second}");
}

#[test]
fn rate_limited_twice_then_succeeds_after_retries() {
    let Some(bin) = codex_or_skip("rate_limited_twice_then_succeeds_after_retries") else {
        return;
    };
    let sb = Sandbox::new();
    let mock = OpenAiMock::start(Script::rate_limited_then(2, 2, write_script()));
    let mut env = CodexEnv::new(mock.base_url(), &sb.home);
    env.stream_max_retries = 3;
    let run = run_with(&bin, &sb, &mock, &CodexArgs::new("Create hello.txt"), &env);

    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(run.last()["type"], "turn.completed", "{run}");
    assert_eq!(sb.read("hello.txt").as_deref(), Some("hi from the mock\n"));
    let calls = mock.responses_requests();
    let statuses: Vec<u16> = calls.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [429, 429, 200, 200],
        "{}",
        mock.describe_requests()
    );
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].at - w[0].at).collect();
    eprintln!("gaps after 429s with retry-after: 2: {gaps:?}");
    for gap in &gaps[..2] {
        // retry-after, not a doubling backoff.
        assert!(*gap >= Duration::from_secs(2), "{gaps:?}");
        assert!(*gap < Duration::from_secs(4), "{gaps:?}");
    }
    // Each retry is announced, then the turn goes on as usual.
    let retries: Vec<&str> = run
        .events_of("error")
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(retries.len(), 2, "{run}");
    assert!(retries[0].starts_with("Reconnecting... 1/3 ("), "{run}");
    assert!(retries[1].starts_with("Reconnecting... 2/3 ("), "{run}");
    assert!(retries[0].contains("429 Too Many Requests"), "{run}");
    assert_eq!(
        &run.types()[..4],
        ["thread.started", "turn.started", "error", "error"]
    );
    assert!(last_message(&run).contains("## Summary"), "{run}");
}

#[test]
fn a_rate_limit_that_never_ends_fails_the_turn() {
    let Some(bin) = codex_or_skip("a_rate_limit_that_never_ends_fails_the_turn") else {
        return;
    };
    let sb = Sandbox::new();
    let mock = OpenAiMock::start(Script::AlwaysRateLimited {
        retry_after_secs: 1,
    });
    let mut env = CodexEnv::new(mock.base_url(), &sb.home);
    env.stream_max_retries = 1;
    let run = run_with(&bin, &sb, &mock, &CodexArgs::new("Create hello.txt"), &env);

    assert_eq!(run.code(), Some(1), "{run}");
    assert_eq!(
        run.types(),
        [
            "thread.started",
            "turn.started",
            "error",
            "error",
            "turn.failed"
        ],
        "{run}"
    );
    let errors = run.events_of("error");
    let retry = errors[0]["message"].as_str().unwrap();
    assert!(retry.starts_with("Reconnecting... 1/1 ("), "{run}");
    let error = errors[1]["message"].as_str().unwrap();
    assert!(
        error.starts_with("exceeded retry limit, last status: 429 Too Many Requests"),
        "{run}"
    );
    assert_eq!(run.last()["error"]["message"], error, "{run}");
    eprintln!("turn.failed: {}", run.last());
    // One try and stream_max_retries = 1 retry.
    assert_eq!(mock.responses_calls(), 2, "{}", mock.describe_requests());
    assert!(sb.read("hello.txt").is_none());
}

#[test]
fn a_quota_429_without_retry_after_is_not_retried() {
    let Some(bin) = codex_or_skip("a_quota_429_without_retry_after_is_not_retried") else {
        return;
    };
    let sb = Sandbox::new();
    let mock = OpenAiMock::start(Script::QuotaExceeded);
    let mut env = CodexEnv::new(mock.base_url(), &sb.home);
    env.request_max_retries = 3;
    env.stream_max_retries = 3;
    let run = run_with(&bin, &sb, &mock, &CodexArgs::new("Create hello.txt"), &env);

    assert_eq!(run.code(), Some(1), "{run}");
    assert_eq!(
        run.types(),
        ["thread.started", "turn.started", "error", "turn.failed"],
        "{run}"
    );
    eprintln!("quota: {}", run.last());
    assert_eq!(mock.responses_calls(), 1, "{}", mock.describe_requests());
}

#[test]
fn a_slow_stream_can_be_cut_by_killing_the_cli() {
    let Some(bin) = codex_or_skip("a_slow_stream_can_be_cut_by_killing_the_cli") else {
        return;
    };
    let sb = Sandbox::new();
    let mock = OpenAiMock::start(Script::Slow {
        delay_per_event: Duration::from_millis(200),
        chunks: 10_000,
    });
    let started = Instant::now();
    let env = CodexEnv::new(mock.base_url(), &sb.home);
    let mut child = spawn(&bin, &sb, &CodexArgs::new("Take your time"), &env);
    assert!(
        mock.wait_until(Duration::from_secs(60), |m| m.in_flight() == 1),
        "no request in flight\n{}",
        mock.describe_requests()
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(child.try_wait().unwrap(), None, "codex ended early");
    child.kill().unwrap();
    let run = finish("codex", child, started, RUN_TIMEOUT);
    assert!(!run.status.success());
    assert!(
        mock.wait_until(Duration::from_secs(10), |m| m.streams_aborted() == 1
            && m.in_flight() == 0),
        "the mock did not see the stream cut\n{}",
        mock.describe_requests()
    );
    assert_eq!(mock.streams_completed(), 0);
    // Codex prints whole items only: nothing after turn.started.
    assert_eq!(run.types(), ["thread.started", "turn.started"], "{run}");
    eprintln!("slow run cut after {:?}", run.elapsed);
}

#[test]
fn sigterm_mid_stream_exits_promptly() {
    let Some(bin) = codex_or_skip("sigterm_mid_stream_exits_promptly") else {
        return;
    };
    let sb = Sandbox::new();
    let mock = OpenAiMock::start(Script::Slow {
        delay_per_event: Duration::from_millis(200),
        chunks: 10_000,
    });
    let started = Instant::now();
    let env = CodexEnv::new(mock.base_url(), &sb.home);
    let child = spawn(&bin, &sb, &CodexArgs::new("Take your time"), &env);
    assert!(
        mock.wait_until(Duration::from_secs(60), |m| m.in_flight() == 1),
        "no request in flight\n{}",
        mock.describe_requests()
    );
    std::thread::sleep(Duration::from_millis(1000));
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let signalled = Instant::now();
    let run = finish("codex", child, started, RUN_TIMEOUT);
    eprintln!(
        "codex after SIGTERM: exit {:?} within {:?}, events {:?}\nlast: {}",
        run.code(),
        signalled.elapsed(),
        run.types(),
        run.last()
    );
    assert!(signalled.elapsed() < Duration::from_secs(10), "{run}");
    // Killed by the signal itself (no handler): no exit code, no more events.
    assert_eq!(run.status.signal(), Some(libc::SIGTERM), "{run}");
    assert_eq!(run.types(), ["thread.started", "turn.started"], "{run}");
    assert!(
        mock.wait_until(Duration::from_secs(10), |m| m.streams_aborted() == 1
            && m.in_flight() == 0),
        "{}",
        mock.describe_requests()
    );
    assert_eq!(mock.streams_completed(), 0);
}
