//! Gemini CLI and Codex through the same executor as Claude: the real CLIs
//! (installed by scripts/install-agents) against the project's own scripted
//! Gemini and OpenAI-Responses servers on loopback.

mod common;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use claudomator::config::Config;
use claudomator::core::logs::LogHub;
use claudomator::core::model::Id;
use claudomator::proto as pb;
use claudomator::runners::codex::CodexRunner;
use claudomator::runners::gemini::GeminiRunner;
use claudomator::runners::{CommandSpec, Price, PriceTable, RunRequest, Runner, Verdict};
use common::{
    Client, TestServer, agent_spec, executions, processes_in, start_server_with, submit,
    wait_completed, wait_for,
};
use support::anthropic_mock::{self, AnthropicMock};
use support::claude_env::{claude_or_skip, configure_claude};
use support::codex_env::{CodexEnv, codex_launcher_path, codex_or_skip};
use support::gemini_env::{gemini_bin_path, gemini_or_skip};
use support::gemini_mock::{self, GeminiMock};
use support::openai_mock::{self, OpenAiMock};
use tokio_util::sync::CancellationToken;

const GEMINI_MODEL: &str = "gemini-2.5-flash";
/// A model Codex knows, so it offers its apply_patch tool.
const CODEX_MODEL: &str = "gpt-5.5";

fn all_installed(test: &str) -> bool {
    claude_or_skip(test).is_some()
        && gemini_or_skip(test).is_some()
        && codex_or_skip(test).is_some()
}

/// Points the Gemini and Codex sections of `c` at the mocks.
fn configure_gemini(c: &mut Config, mock: &GeminiMock) {
    c.agents.gemini.command = gemini_bin_path();
    c.agents.gemini.base_url = mock.base_url();
    c.agents.gemini.model = GEMINI_MODEL.into();
    c.agents.gemini.max_retries = Some(0);
    c.agents
        .gemini
        .env
        .insert("GEMINI_API_KEY".into(), "mock-gemini-key".into());
}

fn configure_codex(c: &mut Config, mock: &OpenAiMock) {
    c.agents.codex.command = codex_launcher_path();
    c.agents.codex.base_url = mock.base_url();
    c.agents.codex.model = CODEX_MODEL.into();
    c.agents.codex.max_retries = Some(0);
    c.agents.codex.api_key_env = CodexEnv::API_KEY_VAR.into();
    c.agents
        .codex
        .env
        .insert(CodexEnv::API_KEY_VAR.into(), "sk-mock".into());
    c.prices.insert(
        CODEX_MODEL.into(),
        Price {
            input_per_mtok: 1.25,
            output_per_mtok: 10.0,
        },
    );
}

async fn server(adjust: impl FnOnce(&mut Config)) -> TestServer {
    start_server_with(|c| {
        c.executor.enabled = true;
        c.executor.poll_interval = "200ms".into();
        c.executor.retry_base = "1s".into();
        adjust(c);
    })
    .await
}

const FINAL: [pb::TaskState; 4] = [
    pb::TaskState::Completed,
    pb::TaskState::Failed,
    pb::TaskState::Cancelled,
    pb::TaskState::TimedOut,
];

#[tokio::test]
async fn three_agents_run_side_by_side_with_the_same_record() {
    if !all_installed("three_agents_run_side_by_side_with_the_same_record") {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let claude = AnthropicMock::start(anthropic_mock::Script::write_file("from-claude.txt", "c"));
    let gemini = GeminiMock::start(gemini_mock::Script::write_file("from-gemini.txt", "g"));
    let codex = OpenAiMock::start(openai_mock::Script::write_file("from-codex.txt", "x"));
    let server = server(|c| {
        c.executor.max_concurrent = 3;
        configure_claude(c, &claude.base_url(), home.path(), 1);
        configure_gemini(c, &gemini);
        configure_codex(c, &codex);
    })
    .await;
    let mut client = server.client().await;

    let mut tasks = Vec::new();
    for (agent, file) in [
        (pb::AgentType::Claude, "from-claude.txt"),
        (pb::AgentType::Gemini, "from-gemini.txt"),
        (pb::AgentType::Codex, "from-codex.txt"),
    ] {
        let task = submit(&mut client, agent_spec(agent, &format!("create {file}"))).await;
        tasks.push((agent, file, task));
    }
    for (agent, file, task) in &tasks {
        let done = wait_for(&mut client, &task.id, &FINAL).await;
        assert_eq!(
            done.state,
            pb::TaskState::Completed as i32,
            "{agent:?}: {}",
            done.state_reason
        );
        let run = executions(&mut client, &task.id).await.remove(0);
        assert_eq!(run.agent, *agent as i32);
        assert!(!run.session_id.is_empty(), "{agent:?} session");
        assert!(
            run.input_tokens > 0 && run.output_tokens > 0,
            "{agent:?} tokens"
        );
        assert!(run.cost_usd > 0.0 && !run.cost_unknown, "{agent:?} cost");
        assert_eq!(
            run.cost_estimated,
            *agent != pb::AgentType::Claude,
            "{agent:?}"
        );
        assert_eq!(run.changed_files, vec![file.to_string()], "{agent:?}");
        assert_eq!(run.commits.len(), 1, "{agent:?}");
        assert!(!run.summary.is_empty(), "{agent:?} summary");
    }
    // The three ran at the same time, one each.
    for (mock_max, name) in [
        (claude.max_in_flight(), "claude"),
        (gemini.max_in_flight(), "gemini"),
        (codex.max_in_flight(), "codex"),
    ] {
        assert_eq!(mock_max, 1, "{name}");
    }
}

#[tokio::test]
async fn rate_limits_back_off_and_then_succeed_for_gemini_and_codex() {
    if gemini_or_skip("rate_limits_back_off_and_then_succeed_for_gemini_and_codex").is_none()
        || codex_or_skip("rate_limits_back_off_and_then_succeed_for_gemini_and_codex").is_none()
    {
        return;
    }
    let gemini = GeminiMock::start(gemini_mock::Script::rate_limited_then(
        1,
        1,
        gemini_mock::Script::write_file("g.txt", "g"),
    ));
    let codex = OpenAiMock::start(openai_mock::Script::rate_limited_then(
        1,
        1,
        openai_mock::Script::write_file("x.txt", "x"),
    ));
    let server = server(|c| {
        configure_gemini(c, &gemini);
        configure_codex(c, &codex);
    })
    .await;
    let mut client = server.client().await;
    let g = submit(
        &mut client,
        agent_spec(pb::AgentType::Gemini, "write g.txt"),
    )
    .await;
    let x = submit(&mut client, agent_spec(pb::AgentType::Codex, "write x.txt")).await;
    for task in [g, x] {
        wait_completed(&mut client, &task.id).await;
        let runs = executions(&mut client, &task.id).await;
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!(
            runs[0].state,
            pb::ExecutionState::RateLimited as i32,
            "{}",
            runs[0].error
        );
        assert_eq!(
            runs[1].state,
            pb::ExecutionState::Succeeded as i32,
            "{}",
            runs[1].error
        );
    }
}

#[tokio::test]
async fn cancel_stops_gemini_and_codex_and_everything_they_started() {
    if gemini_or_skip("cancel_stops_gemini_and_codex_and_everything_they_started").is_none()
        || codex_or_skip("cancel_stops_gemini_and_codex_and_everything_they_started").is_none()
    {
        return;
    }
    let slow = Duration::from_millis(200);
    let gemini = GeminiMock::start(gemini_mock::Script::Slow {
        delay_per_event: slow,
        chunks: 1000,
    });
    let codex = OpenAiMock::start(openai_mock::Script::Slow {
        delay_per_event: slow,
        chunks: 1000,
    });
    let server = server(|c| {
        configure_gemini(c, &gemini);
        configure_codex(c, &codex);
    })
    .await;
    let mut client = server.client().await;
    let sandboxes = server.data_dir().join("sandboxes");
    let g = submit(&mut client, agent_spec(pb::AgentType::Gemini, "slowly")).await;
    let x = submit(&mut client, agent_spec(pb::AgentType::Codex, "slowly")).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    while gemini.in_flight() == 0 || codex.in_flight() == 0 {
        assert!(
            Instant::now() < deadline,
            "the agents never reached their models"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!processes_in(&sandboxes).is_empty());
    // Each agent (and all it started) runs with a home of its own, never
    // the server user's: no profile, config or credentials of theirs.
    for (agent, task) in [("gemini", &g), ("codex", &x)] {
        let own = server.data_dir().join("agents").join(agent);
        let homes: Vec<String> = processes_in(&sandboxes.join(&task.id))
            .iter()
            .map(|p| home_of(p.split(':').next().unwrap()))
            .collect();
        assert!(
            !homes.is_empty() && homes.iter().all(|h| Path::new(h) == own),
            "{agent} runs with HOME {homes:?}, not {}",
            own.display()
        );
    }
    for task in [&g, &x] {
        client
            .cancel_task(pb::CancelTaskRequest {
                id: task.id.clone(),
                reason: String::new(),
            })
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut ended = true;
        for task in [&g, &x] {
            ended &= executions(&mut client, &task.id)
                .await
                .iter()
                .all(|r| r.ended_at.is_some());
        }
        if ended {
            break;
        }
        assert!(Instant::now() < deadline, "executions did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for task in [&g, &x] {
        let run = executions(&mut client, &task.id).await.remove(0);
        assert_eq!(
            run.state,
            pb::ExecutionState::Cancelled as i32,
            "{}",
            run.error
        );
    }
    let left = processes_in(&sandboxes);
    assert!(left.is_empty(), "processes outlived their task: {left:?}");
}

/// The `HOME` a process runs with (empty when it has none or is gone).
fn home_of(pid: &str) -> String {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(b"HOME="))
        .map(|home| String::from_utf8_lossy(home).into_owned())
        .unwrap_or_default()
}

/// Runs one attempt through a runner directly, in `workdir`.
async fn run_once(
    runner: &dyn Runner,
    hub: &std::sync::Arc<LogHub>,
    workdir: &Path,
    prompt: &str,
    model: &str,
    resume: Option<String>,
    prior_usage: Option<(u64, u64)>,
) -> claudomator::runners::RunOutcome {
    let execution = Id::new();
    let mut log = hub.writer(execution).unwrap();
    let request = RunRequest {
        task_id: Id::new(),
        execution_id: execution,
        workdir: workdir.to_path_buf(),
        prompt: prompt.into(),
        system_prompt: String::new(),
        model: model.into(),
        allowed_tools: Vec::new(),
        max_budget_usd: 0.0,
        max_turns: 0,
        resume_session: resume,
        prior_usage,
        confinement: Default::default(),
    };
    runner
        .run(request, &mut log, CancellationToken::new())
        .await
}

#[tokio::test]
async fn gemini_and_codex_runners_resume_their_sessions() {
    if gemini_or_skip("gemini_and_codex_runners_resume_their_sessions").is_none()
        || codex_or_skip("gemini_and_codex_runners_resume_their_sessions").is_none()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let workdir = dir.path().join("work");
    common::init_git_repo(&workdir);
    let hub = LogHub::new(dir.path().join("logs")).unwrap();
    let mut prices = PriceTable::new();
    prices.insert(
        CODEX_MODEL.into(),
        Price {
            input_per_mtok: 1.0,
            output_per_mtok: 1.0,
        },
    );
    let prices = std::sync::Arc::new(prices);

    let gemini_mock = GeminiMock::start(gemini_mock::Script::write_file("g.txt", "g"));
    let mut env = std::collections::BTreeMap::new();
    env.insert("GEMINI_API_KEY".to_string(), "mock-gemini-key".to_string());
    let gemini = GeminiRunner::new(
        CommandSpec {
            program: gemini_bin_path(),
            env,
            home: dir.path().join("gemini-home"),
            base_url: gemini_mock.base_url(),
            api_key_env: String::new(),
            max_retries: 0,
            ..CommandSpec::default()
        },
        prices.clone(),
    );
    let first = run_once(
        &gemini,
        &hub,
        &workdir,
        "write g.txt",
        GEMINI_MODEL,
        None,
        None,
    )
    .await;
    assert_eq!(first.verdict, Verdict::Succeeded);
    assert!(workdir.join("g.txt").is_file());
    let resumed = run_once(
        &gemini,
        &hub,
        &workdir,
        "The answer is 42.",
        GEMINI_MODEL,
        Some(first.session_id.clone()),
        None,
    )
    .await;
    assert_eq!(resumed.verdict, Verdict::Succeeded, "{:?}", resumed.verdict);
    assert_eq!(resumed.session_id, first.session_id);

    let codex_mock = OpenAiMock::start(openai_mock::Script::write_file("x.txt", "x"));
    let mut env = std::collections::BTreeMap::new();
    env.insert(CodexEnv::API_KEY_VAR.to_string(), "sk-mock".to_string());
    let codex = CodexRunner::new(
        CommandSpec {
            program: codex_launcher_path(),
            env,
            home: dir.path().join("codex-home"),
            base_url: codex_mock.base_url(),
            api_key_env: CodexEnv::API_KEY_VAR.into(),
            max_retries: 0,
            ..CommandSpec::default()
        },
        prices,
    );
    let first = run_once(
        &codex,
        &hub,
        &workdir,
        "write x.txt",
        CODEX_MODEL,
        None,
        None,
    )
    .await;
    assert_eq!(first.verdict, Verdict::Succeeded, "{:?}", first.verdict);
    assert!(workdir.join("x.txt").is_file());
    let resumed = run_once(
        &codex,
        &hub,
        &workdir,
        "The answer is 42.",
        CODEX_MODEL,
        Some(first.session_id.clone()),
        Some((first.input_tokens, first.output_tokens)),
    )
    .await;
    assert_eq!(resumed.verdict, Verdict::Succeeded, "{:?}", resumed.verdict);
    assert_eq!(resumed.session_id, first.session_id);
    // Usage on a resumed thread is cumulative (the mock charges its input
    // per call: two calls, then one more); the runner records this run's share.
    assert_eq!(first.input_tokens, 2 * openai_mock::INPUT_TOKENS);
    assert_eq!(resumed.input_tokens, openai_mock::INPUT_TOKENS);
}

const QUESTION: &str = r#"{"question": "Which database should the cache use?", "choices": ["sqlite", "redis"], "context": "both are installed"}"#;
const ANSWER: &str = "Use sqlite, it is already a dependency.";

async fn answer_round_trip(client: &mut Client, agent: pb::AgentType) -> pb::Task {
    let task = submit(client, agent_spec(agent, "add a cache; ask which database")).await;
    let blocked = wait_for(
        client,
        &task.id,
        &[
            pb::TaskState::Blocked,
            pb::TaskState::Completed,
            pb::TaskState::Failed,
        ],
    )
    .await;
    assert_eq!(
        blocked.state,
        pb::TaskState::Blocked as i32,
        "{agent:?}: {}",
        blocked.state_reason
    );
    let question = blocked.question.clone().expect("the question is stored");
    assert_eq!(question.text, "Which database should the cache use?");
    assert_eq!(
        question.choices,
        vec!["sqlite".to_string(), "redis".to_string()]
    );
    let first = executions(client, &task.id).await.remove(0);
    assert_eq!(first.state, pb::ExecutionState::Blocked as i32);
    // Watchers saw a question event.
    let mut stream = client
        .stream_logs(pb::StreamLogsRequest {
            execution_id: first.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut asked = false;
    while let Some(event) = tokio_stream::StreamExt::next(&mut stream).await {
        asked |= event.unwrap().event.unwrap().kind == pb::LogEventKind::Question as i32;
    }
    assert!(asked, "{agent:?}: no question event");

    // Answering anything but a blocked task, or with nothing, is refused.
    let err = client
        .answer_question(pb::AnswerQuestionRequest {
            task_id: task.id.clone(),
            answer: "  ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let answered = client
        .answer_question(pb::AnswerQuestionRequest {
            task_id: task.id.clone(),
            answer: ANSWER.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(answered.state, pb::TaskState::Queued as i32);
    assert!(answered.question.is_none());
    let err = client
        .answer_question(pb::AnswerQuestionRequest {
            task_id: task.id.clone(),
            answer: ANSWER.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    let done = wait_for(client, &task.id, &FINAL).await;
    assert_eq!(
        done.state,
        pb::TaskState::Completed as i32,
        "{agent:?}: {}",
        done.state_reason
    );
    let runs = executions(client, &task.id).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(
        runs[1].session_id, first.session_id,
        "{agent:?}: the same session resumed"
    );
    done
}

#[tokio::test]
async fn each_agent_asks_is_answered_and_resumes_its_session() {
    if !all_installed("each_agent_asks_is_answered_and_resumes_its_session") {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let file = ".claudomator/question.json";
    let claude = AnthropicMock::start(anthropic_mock::Script::write_file(file, QUESTION));
    let gemini = GeminiMock::start(gemini_mock::Script::write_file(file, QUESTION));
    let codex = OpenAiMock::start(openai_mock::Script::write_file(file, QUESTION));
    let server = server(|c| {
        c.executor.max_concurrent = 3;
        configure_claude(c, &claude.base_url(), home.path(), 1);
        configure_gemini(c, &gemini);
        configure_codex(c, &codex);
    })
    .await;
    let mut client = server.client().await;
    let (c, g, x) = tokio::join!(
        async {
            let mut client = server.client().await;
            answer_round_trip(&mut client, pb::AgentType::Claude).await
        },
        async {
            let mut client = server.client().await;
            answer_round_trip(&mut client, pb::AgentType::Gemini).await
        },
        async {
            let mut client = server.client().await;
            answer_round_trip(&mut client, pb::AgentType::Codex).await
        },
    );
    // Each model server saw the answer in the resumed session's history.
    let saw = |bodies: Vec<String>| bodies.iter().any(|b| b.contains(ANSWER));
    assert!(
        saw(claude
            .requests()
            .iter()
            .filter_map(|r| r.body.as_ref().map(|b| b.to_string()))
            .collect()),
        "claude"
    );
    assert!(
        saw(gemini
            .requests()
            .iter()
            .filter_map(|r| r.body.as_ref().map(|b| b.to_string()))
            .collect()),
        "gemini"
    );
    assert!(
        saw(codex
            .requests()
            .iter()
            .filter_map(|r| r.body.as_ref().map(|b| b.to_string()))
            .collect()),
        "codex"
    );
    // The question file never reaches the delivered branch.
    for task in [c, g, x] {
        let runs = executions(&mut client, &task.id).await;
        assert!(
            runs.iter()
                .all(|r| !r.changed_files.iter().any(|f| f.contains(".claudomator"))),
            "{runs:?}"
        );
    }
}

#[tokio::test]
async fn review_rejects_with_feedback_then_accepts() {
    if claude_or_skip("review_rejects_with_feedback_then_accepts").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let claude = AnthropicMock::start(anthropic_mock::Script::write_file("feature.txt", "v1"));
    let server = server(|c| configure_claude(c, &claude.base_url(), home.path(), 1)).await;
    let mut client = server.client().await;
    let mut spec = agent_spec(pb::AgentType::Claude, "write feature.txt");
    spec.review_required = true;
    let task = submit(&mut client, spec).await;
    let ready = wait_for(
        &mut client,
        &task.id,
        &[pb::TaskState::Ready, pb::TaskState::Failed],
    )
    .await;
    assert_eq!(
        ready.state,
        pb::TaskState::Ready as i32,
        "{}",
        ready.state_reason
    );
    assert!(!ready.summary.is_empty());
    // The work is reviewable in the project, and the sandbox waits.
    assert!(server.data_dir().join("sandboxes").join(&task.id).is_dir());

    let err = client
        .reject_task(pb::RejectTaskRequest {
            task_id: task.id.clone(),
            feedback: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let feedback = "Please also mention it in the README.";
    let rejected = client
        .reject_task(pb::RejectTaskRequest {
            task_id: task.id.clone(),
            feedback: feedback.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(rejected.state, pb::TaskState::Queued as i32);
    let ready_again = wait_for(
        &mut client,
        &task.id,
        &[pb::TaskState::Ready, pb::TaskState::Failed],
    )
    .await;
    assert_eq!(
        ready_again.state,
        pb::TaskState::Ready as i32,
        "{}",
        ready_again.state_reason
    );
    let runs = executions(&mut client, &task.id).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(
        runs[1].session_id, runs[0].session_id,
        "the review resumed the session"
    );
    assert!(claude.requests().iter().any(|r| {
        r.body
            .as_ref()
            .is_some_and(|b| b.to_string().contains(feedback))
    }));

    let accepted = client
        .accept_task(pb::AcceptTaskRequest {
            task_id: task.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(accepted.state, pb::TaskState::Completed as i32);
    assert!(!server.data_dir().join("sandboxes").join(&task.id).exists());
    let err = client
        .accept_task(pb::AcceptTaskRequest {
            task_id: task.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test]
async fn an_unanswered_question_times_out_when_configured() {
    if claude_or_skip("an_unanswered_question_times_out_when_configured").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let claude = AnthropicMock::start(anthropic_mock::Script::write_file(
        ".claudomator/question.json",
        QUESTION,
    ));
    let server = server(|c| {
        configure_claude(c, &claude.base_url(), home.path(), 1);
        c.executor.blocked_timeout = "1s".into();
    })
    .await;
    let mut client = server.client().await;
    let task = submit(&mut client, agent_spec(pb::AgentType::Claude, "ask")).await;
    wait_for(&mut client, &task.id, &[pb::TaskState::Blocked]).await;
    let timed_out = wait_for(&mut client, &task.id, &[pb::TaskState::TimedOut]).await;
    assert!(
        timed_out.state_reason.contains("nobody answered"),
        "{}",
        timed_out.state_reason
    );
}

/// The events of an execution's log as StreamLogs sends them.
async fn streamed(
    client: &mut Client,
    execution_id: &str,
    include_debug: bool,
) -> Vec<pb::LogEvent> {
    let mut stream = client
        .stream_logs(pb::StreamLogsRequest {
            execution_id: execution_id.into(),
            include_debug,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(item) = tokio_stream::StreamExt::next(&mut stream).await {
        events.extend(item.unwrap().event);
    }
    events
}

#[tokio::test]
async fn agent_chatter_stays_in_the_log_file_but_out_of_the_streamed_log() {
    if !all_installed("agent_chatter_stays_in_the_log_file_but_out_of_the_streamed_log") {
        return;
    }
    let gemini = GeminiMock::start(gemini_mock::Script::write_file("g.txt", "g"));
    let codex = OpenAiMock::start(openai_mock::Script::write_file("x.txt", "x"));
    let server = server(|c| {
        configure_gemini(c, &gemini);
        configure_codex(c, &codex);
    })
    .await;
    let mut client = server.client().await;
    // What each CLI prints on stderr at every run (seen with the pinned
    // versions), and what a person must see instead: nothing on stderr.
    for (agent, chatter) in [
        (pb::AgentType::Gemini, "YOLO mode is enabled"),
        (pb::AgentType::Codex, "Reading additional input from stdin"),
    ] {
        let task = submit(&mut client, agent_spec(agent, "create the file")).await;
        wait_completed(&mut client, &task.id).await;
        let run = executions(&mut client, &task.id).await.remove(0);
        let read = streamed(&mut client, &run.id, false).await;
        let noisy: Vec<&pb::LogEvent> = read
            .iter()
            .filter(|e| {
                e.kind == pb::LogEventKind::Stderr as i32
                    || e.kind == pb::LogEventKind::Debug as i32
            })
            .collect();
        assert!(noisy.is_empty(), "{agent:?}: {noisy:?}");
        assert!(
            read.iter()
                .any(|e| e.kind == pb::LogEventKind::Result as i32)
        );
        // Asked for, the chatter comes back as debug events, at its place.
        let all = streamed(&mut client, &run.id, true).await;
        assert!(
            all.iter()
                .any(|e| e.kind == pb::LogEventKind::Debug as i32 && e.text.contains(chatter)),
            "{agent:?}: {all:?}"
        );
        assert!(all.len() > read.len());
        // And the log file keeps every line the CLI wrote.
        let file = std::fs::read_to_string(&run.log_path).unwrap();
        assert!(
            file.lines()
                .any(|l| l.contains(r#""kind":"debug""#) && l.contains(chatter)),
            "{agent:?}: {file}"
        );
    }
}

/// Codex on a model the price table lacks: the cost is unknown (not
/// `$0.0000 (estimated)`) through the API and the CLI, and `doctor` names
/// the model with the `[prices]` line to add.
#[tokio::test]
async fn an_unpriced_model_has_an_unknown_cost_and_doctor_names_its_price_line() {
    if codex_or_skip("an_unpriced_model_has_an_unknown_cost_and_doctor_names_its_price_line")
        .is_none()
    {
        return;
    }
    let codex = OpenAiMock::start(openai_mock::Script::write_file("x.txt", "x"));
    let server = server(|c| {
        configure_codex(c, &codex);
        c.prices.remove(CODEX_MODEL);
    })
    .await;
    let mut client = server.client().await;
    let task = submit(
        &mut client,
        agent_spec(pb::AgentType::Codex, "create x.txt"),
    )
    .await;
    wait_completed(&mut client, &task.id).await;
    let run = executions(&mut client, &task.id).await.remove(0);
    assert!(run.cost_unknown, "{run:?}");
    assert!(run.input_tokens > 0 && run.output_tokens > 0, "{run:?}");

    let status = client
        .get_system_status(pb::GetSystemStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let prices = status.prices.unwrap();
    let line = format!(r#""{CODEX_MODEL}" = {{ input_per_mtok = IN, output_per_mtok = OUT }}"#);
    assert!(
        !prices.ok && prices.detail.contains(&line),
        "{}",
        prices.detail
    );
    assert!(prices.detail.contains("[prices]"), "{}", prices.detail);

    // The real binary (async: the server runs on this test's runtime).
    let url = server.url();
    let cli = async |args: &[&str]| {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_claudomator"))
            .args(args)
            .args(["--server", &url])
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = cli(&["execution", &run.id]).await;
    assert!(shown.contains("cost:          unknown"), "{shown}");
    assert!(!shown.contains("$0.0000"), "{shown}");
    let got = cli(&["get", &task.id]).await;
    assert!(
        got.contains("cost:          unknown over 1 attempt"),
        "{got}"
    );
    let doctor = cli(&["doctor"]).await;
    assert!(
        doctor
            .lines()
            .any(|l| l.starts_with("prices") && l.contains(&line)),
        "{doctor}"
    );
}
