//! The real `gemini` CLI (Gemini CLI, installed by `scripts/install-agents`)
//! run headless (`-p … -o stream-json`) and fully offline against the
//! scripted Gemini API mock in `tests/support/gemini_mock.rs`. Each test gets
//! its own mock, its own HOME/TMPDIR and its own temp git repo as the cwd.
//!
//! Without the CLI the tests print `SKIPPED` and pass, unless `CI` is set.

mod support;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::agent_process::{Run, Sandbox, finish};
use support::gemini_env::{GeminiArgs, GeminiEnv, gemini_command, gemini_or_skip};
use support::gemini_mock::{GeminiMock, INPUT_TOKENS, OUTPUT_TOKENS, RATE_LIMIT_MESSAGE, Script};

/// No single run may take longer than this; a hang fails the test.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn spawn(bin: &Path, sb: &Sandbox, args: &GeminiArgs, env: &GeminiEnv) -> Child {
    gemini_command(bin, &sb.repo, args, env)
        .spawn()
        .expect("spawn gemini")
}

fn run_with(
    bin: &Path,
    sb: &Sandbox,
    mock: &GeminiMock,
    args: &GeminiArgs,
    env: &GeminiEnv,
) -> Run {
    let started = Instant::now();
    let child = spawn(bin, sb, args, env);
    let run = finish("gemini", child, started, RUN_TIMEOUT);
    eprintln!(
        "gemini {:?} took {:?}, exit {:?}",
        args.to_args(),
        run.elapsed,
        run.code()
    );
    eprintln!("mock saw:\n{}", mock.describe_requests());
    eprintln!("--- stdout\n{}--- stderr\n{}", run.stdout, run.stderr);
    run
}

fn run(bin: &Path, sb: &Sandbox, mock: &GeminiMock, args: &GeminiArgs) -> Run {
    run_with(
        bin,
        sb,
        mock,
        args,
        &GeminiEnv::new(mock.base_url(), &sb.home),
    )
}

fn write_script() -> Script {
    Script::write_file("hello.txt", "hi from the mock\n")
}

/// The final text: the concatenated assistant `message` deltas.
fn assistant_text(run: &Run) -> String {
    run.events_of("message")
        .into_iter()
        .filter(|e| e["role"] == "assistant")
        .map(|e| e["content"].as_str().unwrap_or(""))
        .collect()
}

fn result(run: &Run) -> &Value {
    let last = run.last();
    assert_eq!(last["type"], "result", "last event is not a result\n{run}");
    last
}

fn assert_success(run: &Run) {
    assert_eq!(run.code(), Some(0), "gemini failed\n{run}");
    let result = result(run);
    assert_eq!(result["status"], "success", "{run}");
    assert!(result.get("error").is_none(), "{run}");
    let init = run.first("init");
    assert_eq!(run.events[0]["type"], "init", "{run}");
    let session = init["session_id"].as_str().unwrap();
    assert_eq!(session.len(), 36, "a UUID: {session}\n{run}");
    // The prompt is echoed as the first message.
    assert_eq!(run.events[1]["type"], "message", "{run}");
    assert_eq!(run.events[1]["role"], "user", "{run}");
}

#[test]
fn writes_the_file_and_ends_with_a_summary() {
    let Some(bin) = gemini_or_skip("writes_the_file_and_ends_with_a_summary") else {
        return;
    };
    let sb = Sandbox::new();
    let mock = GeminiMock::start(write_script());
    let run = run(&bin, &sb, &mock, &GeminiArgs::new("Create hello.txt"));

    assert_success(&run);
    assert_eq!(run.first("init")["model"], "gemini-2.5-flash", "{run}");
    assert_eq!(
        run.types(),
        [
            "init",
            "message",
            "message",
            "message",
            "tool_use",
            "tool_result",
            "message",
            "message",
            "result"
        ],
        "{run}"
    );
    for m in run.events_of("message").into_iter().skip(1) {
        assert_eq!(m["role"], "assistant", "{run}");
        assert_eq!(m["delta"], true, "{run}");
    }
    let text = assistant_text(&run);
    assert!(text.starts_with("I'll create hello.txt."), "{run}");
    assert!(text.contains("## Summary"), "{run}");

    let tool_use = run.first("tool_use");
    assert_eq!(tool_use["tool_name"], "write_file", "{run}");
    let tool_id = tool_use["tool_id"].as_str().unwrap();
    assert!(tool_id.starts_with("write_file"), "{run}");
    assert_eq!(
        tool_use["parameters"]["file_path"],
        sb.repo.join("hello.txt").to_str().unwrap(),
        "{run}"
    );
    let tool_result = run.first("tool_result");
    assert_eq!(tool_result["tool_id"], tool_id, "{run}");
    assert_eq!(tool_result["status"], "success", "{run}");
    assert_eq!(sb.read("hello.txt").as_deref(), Some("hi from the mock\n"));

    // Token counts: the sum over both model calls.
    let stats = &result(&run)["stats"];
    assert_eq!(stats["input_tokens"], 2 * INPUT_TOKENS, "{run}");
    assert_eq!(stats["output_tokens"], 2 * OUTPUT_TOKENS, "{run}");
    assert_eq!(
        stats["total_tokens"],
        2 * (INPUT_TOKENS + OUTPUT_TOKENS),
        "{run}"
    );
    assert_eq!(stats["tool_calls"], 1, "{run}");
    assert_eq!(
        stats["models"]["gemini-2.5-flash"]["input_tokens"],
        2 * INPUT_TOKENS,
        "{run}"
    );
    assert!(stats["duration_ms"].as_u64().is_some(), "{run}");

    // What went over the wire: two streamed turns, nothing else.
    let calls = mock.model_requests();
    assert_eq!(calls.len(), 2, "{}", mock.describe_requests());
    for call in &calls {
        assert!(call.is_stream(), "{}", mock.describe_requests());
        assert_eq!(
            call.path,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
        );
        assert_eq!(call.query.as_deref(), Some("alt=sse"));
        assert_eq!(call.header("x-goog-api-key"), Some("mock-gemini-key"));
        assert!(
            call.header("user-agent")
                .unwrap()
                .starts_with("GeminiCLI-tui/0.61.0/gemini-2.5-flash"),
            "{:?}",
            call.headers
        );
        assert!(call.tool_names().iter().any(|t| t == "write_file"));
        assert!(call.tool_names().iter().any(|t| t == "run_shell_command"));
    }
    eprintln!("yolo tools: {:?}", calls[0].tool_names());
    // Turn 2 carries the model's call and the tool's response.
    let second = calls[1].contents();
    assert_eq!(second.len(), 3, "{second:?}");
    assert!(second[2]["parts"][0].get("functionResponse").is_some());
    assert_eq!(mock.streams_completed(), 2);
    assert_eq!(mock.streams_aborted(), 0);
    assert_eq!(mock.max_in_flight(), 1);
    assert_eq!(mock.requests().len(), 2, "{}", mock.describe_requests());
}

#[test]
fn auto_edit_writes_files_but_offers_no_shell() {
    let Some(bin) = gemini_or_skip("auto_edit_writes_files_but_offers_no_shell") else {
        return;
    };
    let sb = Sandbox::new();
    let mock = GeminiMock::start(write_script());
    let mut args = GeminiArgs::new("Create hello.txt");
    args.approval_mode = "auto_edit".into();
    let run = run(&bin, &sb, &mock, &args);

    assert_success(&run);
    assert_eq!(sb.read("hello.txt").as_deref(), Some("hi from the mock\n"));
    let tools = mock.stream_requests()[0].tool_names();
    eprintln!("auto_edit tools: {tools:?}");
    assert!(tools.iter().any(|t| t == "write_file"), "{tools:?}");
    assert!(!tools.iter().any(|t| t == "run_shell_command"), "{tools:?}");
}

#[test]
fn resume_keeps_the_session_and_sends_the_history() {
    let Some(bin) = gemini_or_skip("resume_keeps_the_session_and_sends_the_history") else {
        return;
    };
    let sb = Sandbox::new();
    let mock = GeminiMock::start(write_script());
    let first = run(&bin, &sb, &mock, &GeminiArgs::new("Create hello.txt"));
    assert_success(&first);
    let session = first.first("init")["session_id"]
        .as_str()
        .unwrap()
        .to_string();

    let mut args = GeminiArgs::new("The answer is 42.");
    args.resume = Some(session.clone());
    let second = run(&bin, &sb, &mock, &args);
    assert_success(&second);
    assert_eq!(
        second.first("init")["session_id"],
        session.as_str(),
        "{second}"
    );
    assert_eq!(second.events[1]["content"], "The answer is 42.", "{second}");
    assert!(
        assistant_text(&second).contains("resumed session"),
        "{second}"
    );
    // The history went to the model: the first run's 4 contents + the new one.
    let last = mock.stream_requests().pop().unwrap();
    assert_eq!(last.contents().len(), 5, "{}", mock.describe_requests());
    // Stats cover this run only.
    assert_eq!(result(&second)["stats"]["input_tokens"], INPUT_TOKENS);
}

#[test]
fn auto_model_routes_with_a_json_side_call() {
    let Some(bin) = gemini_or_skip("auto_model_routes_with_a_json_side_call") else {
        return;
    };
    let sb = Sandbox::new();
    let mock = GeminiMock::start(write_script());
    let mut args = GeminiArgs::new("Create hello.txt");
    args.model = None;
    let run = run(&bin, &sb, &mock, &args);

    assert_success(&run);
    assert_eq!(run.first("init")["model"], "auto", "{run}");
    assert_eq!(sb.read("hello.txt").as_deref(), Some("hi from the mock\n"));
    let calls = mock.model_requests();
    let router = &calls[0];
    assert!(
        !router.is_stream() && router.is_side_call(),
        "{}",
        mock.describe_requests()
    );
    let config = &router.body.as_ref().unwrap()["generationConfig"];
    assert_eq!(config["responseMimeType"], "application/json");
    let main: Vec<_> = calls.iter().filter(|c| c.is_stream()).collect();
    assert_eq!(main.len(), 2, "{}", mock.describe_requests());
    // Per-model stats: the router's model and the routed one.
    let models = result(&run)["stats"]["models"].as_object().unwrap();
    assert!(models.contains_key(router.model().unwrap()), "{run}");
    assert!(models.contains_key(main[0].model().unwrap()), "{run}");
    eprintln!(
        "router model {:?}, routed to {:?}",
        router.model(),
        main[0].model()
    );
}

#[test]
fn rate_limited_once_then_succeeds_after_the_retry_info_delay() {
    let Some(bin) = gemini_or_skip("rate_limited_once_then_succeeds_after_the_retry_info_delay")
    else {
        return;
    };
    let sb = Sandbox::new();
    // 7 s is above the CLI's own first backoff (5 s ± 30 %), so the gap
    // shows the RetryInfo delay is what the CLI waited for.
    let mock = GeminiMock::start(Script::rate_limited_then(1, 7, write_script()));
    let mut env = GeminiEnv::new(mock.base_url(), &sb.home);
    env.max_attempts = 3;
    let run = run_with(&bin, &sb, &mock, &GeminiArgs::new("Create hello.txt"), &env);

    assert_success(&run);
    assert_eq!(sb.read("hello.txt").as_deref(), Some("hi from the mock\n"));
    let calls = mock.model_requests();
    let statuses: Vec<u16> = calls.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200, 200], "{}", mock.describe_requests());
    let gap = calls[1].at - calls[0].at;
    eprintln!("retry after a 429 with retryDelay 7s came {gap:?} later");
    assert!(gap >= Duration::from_secs(7), "{gap:?}");
    // 7 s + at most 20 % jitter, not a doubled backoff.
    assert!(gap < Duration::from_secs(12), "{gap:?}");
    // The retry is invisible in stream-json.
    assert_eq!(run.events_of("error").len(), 0, "{run}");
}

#[test]
fn a_rate_limit_that_never_ends_exits_173() {
    let Some(bin) = gemini_or_skip("a_rate_limit_that_never_ends_exits_173") else {
        return;
    };
    let sb = Sandbox::new();
    let mock = GeminiMock::start(Script::AlwaysRateLimited {
        retry_delay_secs: 1,
    });
    let run = run(&bin, &sb, &mock, &GeminiArgs::new("Create hello.txt"));

    // process.exit(error.status): 429 & 0xff.
    assert_eq!(run.code(), Some(429 & 0xff), "{run}");
    assert_eq!(run.types(), ["init", "message", "result"], "{run}");
    let result = result(&run);
    assert_eq!(result["status"], "error", "{run}");
    let message = result["error"]["message"].as_str().unwrap();
    assert!(message.contains(RATE_LIMIT_MESSAGE), "{run}");
    eprintln!("error: {}", result["error"]);
    assert_eq!(result["stats"]["input_tokens"], 0, "{run}");
    // general.maxAttempts = 2: one try and one retry, at least 5 s apart
    // (the CLI's initial backoff beats the 1 s RetryInfo).
    let calls = mock.model_requests();
    assert_eq!(calls.len(), 2, "{}", mock.describe_requests());
    let gap = calls[1].at - calls[0].at;
    eprintln!("retry after a 429 with retryDelay 1s came {gap:?} later");
    assert!(gap >= Duration::from_secs(5), "{gap:?}");
    assert!(sb.read("hello.txt").is_none());
}

#[test]
fn a_daily_quota_is_not_retried() {
    let Some(bin) = gemini_or_skip("a_daily_quota_is_not_retried") else {
        return;
    };
    let sb = Sandbox::new();
    let mock = GeminiMock::start(Script::DailyQuotaExhausted);
    let run = run(&bin, &sb, &mock, &GeminiArgs::new("Create hello.txt"));

    eprintln!("daily quota: exit {:?}, result {}", run.code(), run.last());
    assert_eq!(run.code(), Some(429 & 0xff), "{run}");
    let result = result(&run);
    assert_eq!(result["status"], "error", "{run}");
    // The CLI classifies it (TerminalQuotaError, no retry) but reports the
    // type as "unknown", like every API error.
    assert_eq!(result["error"]["type"], "unknown", "{run}");
    let message = result["error"]["message"].as_str().unwrap();
    assert!(message.contains("exhausted your daily quota"), "{run}");
    assert_eq!(mock.model_calls(), 1, "{}", mock.describe_requests());
}

#[test]
fn max_session_turns_ends_the_run_with_exit_53() {
    let Some(bin) = gemini_or_skip("max_session_turns_ends_the_run_with_exit_53") else {
        return;
    };
    let sb = Sandbox::new();
    let mock = GeminiMock::start(Script::ManyTurns);
    let mut env = GeminiEnv::new(mock.base_url(), &sb.home);
    env.max_session_turns = Some(2);
    let run = run_with(
        &bin,
        &sb,
        &mock,
        &GeminiArgs::new("Keep writing files"),
        &env,
    );

    assert_eq!(run.code(), Some(53), "{run}");
    let result = result(&run);
    assert_eq!(result["status"], "error", "{run}");
    assert_eq!(result["error"]["type"], "FatalTurnLimitedError", "{run}");
    assert!(sb.repo.join("turn-1.txt").is_file(), "{run}");
}

#[test]
fn a_slow_stream_can_be_cut_by_killing_the_cli() {
    let Some(bin) = gemini_or_skip("a_slow_stream_can_be_cut_by_killing_the_cli") else {
        return;
    };
    let sb = Sandbox::new();
    let mock = GeminiMock::start(Script::Slow {
        delay_per_event: Duration::from_millis(200),
        chunks: 10_000,
    });
    let started = Instant::now();
    let env = GeminiEnv::new(mock.base_url(), &sb.home);
    let mut child = spawn(&bin, &sb, &GeminiArgs::new("Take your time"), &env);
    assert!(
        mock.wait_until(Duration::from_secs(60), |m| m.in_flight() == 1),
        "no request in flight\n{}",
        mock.describe_requests()
    );
    // Let a few chunks through, then cancel the run mid-stream.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(child.try_wait().unwrap(), None, "gemini ended early");
    child.kill().unwrap();
    let run = finish("gemini", child, started, RUN_TIMEOUT);
    assert!(!run.status.success());
    assert!(
        mock.wait_until(Duration::from_secs(10), |m| m.streams_aborted() == 1
            && m.in_flight() == 0),
        "the mock did not see the stream cut\n{}",
        mock.describe_requests()
    );
    assert_eq!(mock.streams_completed(), 0);
    // Deltas arrived before the kill; no result event after it.
    let deltas = run
        .events_of("message")
        .into_iter()
        .filter(|e| e["role"] == "assistant")
        .count();
    assert!(deltas >= 1, "{run}");
    assert_eq!(run.events_of("result").len(), 0, "{run}");
    eprintln!("slow run cut after {:?} with {deltas} deltas", run.elapsed);
}

#[test]
fn sigterm_mid_stream_exits_without_a_result() {
    let Some(bin) = gemini_or_skip("sigterm_mid_stream_exits_without_a_result") else {
        return;
    };
    let sb = Sandbox::new();
    let mock = GeminiMock::start(Script::Slow {
        delay_per_event: Duration::from_millis(200),
        chunks: 10_000,
    });
    let started = Instant::now();
    let env = GeminiEnv::new(mock.base_url(), &sb.home);
    let child = spawn(&bin, &sb, &GeminiArgs::new("Take your time"), &env);
    assert!(
        mock.wait_until(Duration::from_secs(60), |m| m.in_flight() == 1),
        "no request in flight\n{}",
        mock.describe_requests()
    );
    std::thread::sleep(Duration::from_millis(1000));
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let signalled = Instant::now();
    let run = finish("gemini", child, started, RUN_TIMEOUT);
    eprintln!(
        "gemini after SIGTERM: exit {:?} within {:?}, events {:?}\nlast: {}",
        run.code(),
        signalled.elapsed(),
        run.types(),
        run.last()
    );
    assert!(signalled.elapsed() < Duration::from_secs(10), "{run}");
    // Surprise: exit status 0, and no result event. Only the missing
    // `result` tells a cancelled run from a finished one.
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(run.events_of("result").is_empty(), "{run}");
    assert_eq!(run.last()["type"], "message", "{run}");
    assert!(
        mock.wait_until(Duration::from_secs(10), |m| m.streams_aborted() == 1
            && m.in_flight() == 0),
        "{}",
        mock.describe_requests()
    );
    assert_eq!(mock.streams_completed(), 0);
}
