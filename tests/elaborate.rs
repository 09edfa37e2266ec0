//! `Elaborate` end to end over gRPC, and `claudomator elaborate --submit`:
//! the local model absent (the real `claude` CLI answers, against the
//! scripted Anthropic server), unreachable, off-schema (the scripted chat
//! server) and real (llama.cpp with a tiny model); claude failing (the real
//! `gemini` CLI answers); every path failing (the template). Whatever path
//! writes it, the spec is submitted unchanged and must be accepted.
//!
//! Tests that need an agent CLI print `SKIPPED` and pass without it, unless
//! `CI` is set.

mod common;
mod support;

use claudomator::config::Config;
use claudomator::proto as pb;
use common::{Client, TestServer, start_server_with};
use serde_json::json;
use support::anthropic_mock::{self, AnthropicMock};
use support::chat_mock::{self, ChatMock, Reply};
use support::claude_env::{claude_or_skip, configure_claude};
use support::gemini_env::{gemini_bin_path, gemini_or_skip};
use support::gemini_mock::{self, GeminiMock};
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_claudomator");
const REQUEST: &str = "add a --json flag to the list command";

/// A spec as a capable model writes it, wrapped in prose and a code fence.
fn model_answer(agent: &str) -> String {
    let spec = json!({
        "name": "Add --json to list",
        "instructions": "Add a --json flag to the `list` command that prints one JSON object per task.",
        "acceptance": "`cargo test --test cli` passes, including a new test of `list --json`.",
        "agent": agent,
        "model": "",
        "allowed_tools": ["Read", "Edit", "Bash"],
        "max_budget_usd": 2,
        "timeout_minutes": 45,
        "priority": "high",
        "tags": ["cli", "json output"]
    });
    format!("Here is the task spec:\n\n```json\n{spec:#}\n```\n\nGood luck!")
}

fn configure_gemini(c: &mut Config, mock: &GeminiMock) {
    c.agents.gemini.command = gemini_bin_path();
    c.agents.gemini.base_url = mock.base_url();
    c.agents.gemini.model = "gemini-2.5-flash".into();
    c.agents.gemini.max_retries = Some(0);
    c.agents
        .gemini
        .env
        .insert("GEMINI_API_KEY".into(), "mock-gemini-key".into());
}

/// No agent CLI can run: each command names a file that does not exist.
fn no_clis(c: &mut Config) {
    for section in [
        &mut c.agents.claude,
        &mut c.agents.gemini,
        &mut c.agents.codex,
    ] {
        section.command = "/nonexistent/agent-cli".into();
    }
}

fn request(text: &str) -> pb::ElaborateRequest {
    pb::ElaborateRequest {
        text: text.into(),
        project: "demo".into(),
        ..Default::default()
    }
}

async fn elaborate(client: &mut Client, req: pb::ElaborateRequest) -> pb::ElaborateResponse {
    client
        .elaborate(req)
        .await
        .unwrap_or_else(|s| panic!("elaborate failed: {s:?}"))
        .into_inner()
}

/// Submits the spec exactly as Elaborate returned it, and checks the task
/// stored is that spec (the attempts limit aside: 0 means the server's).
async fn assert_submits_unchanged(client: &mut Client, response: &pb::ElaborateResponse) {
    let spec = response.spec.clone().expect("a spec");
    let task = client
        .submit_task(common::submit_request(spec.clone()))
        .await
        .unwrap_or_else(|s| panic!("SubmitTask refused the elaborated spec: {s:?}\n{spec:#?}"))
        .into_inner()
        .task
        .unwrap();
    let stored = task.spec.unwrap();
    assert_eq!(
        stored,
        pb::TaskSpec {
            max_attempts: stored.max_attempts,
            ..spec.clone()
        }
    );
    let instructions = spec.instructions.to_ascii_lowercase();
    assert!(instructions.contains("acceptance"), "{}", spec.instructions);
}

fn source(response: &pb::ElaborateResponse) -> pb::ElaborateSource {
    pb::ElaborateSource::try_from(response.source).unwrap()
}

fn scratch_left(server: &TestServer) -> usize {
    std::fs::read_dir(server.data_dir().join("elaborate")).map_or(0, |d| d.count())
}

#[tokio::test]
async fn without_a_local_model_claude_writes_the_spec() {
    if claude_or_skip("without_a_local_model_claude_writes_the_spec").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let claude = AnthropicMock::start(anthropic_mock::Script::Answer(model_answer("claude")));
    let server =
        start_server_with(|c| configure_claude(c, &claude.base_url(), home.path(), 0)).await;
    let mut client = server.client().await;

    let response = elaborate(&mut client, request(REQUEST)).await;
    assert_eq!(
        source(&response),
        pb::ElaborateSource::Claude,
        "{response:#?}"
    );
    assert_eq!(response.model, "claude-sonnet-4-5");
    assert!(
        response.notes[0].starts_with("local model: not configured"),
        "{:?}",
        response.notes
    );
    let spec = response.spec.clone().unwrap();
    assert_eq!(spec.name, "Add --json to list");
    assert_eq!(spec.project, "demo");
    let agent = spec.agent.clone().unwrap();
    assert_eq!(agent.r#type, pb::AgentType::Claude as i32);
    assert_eq!(agent.model, "claude-sonnet-4-5");
    assert_eq!(agent.max_budget_usd, 2.0);
    assert_eq!(spec.timeout, "45m");
    assert_eq!(spec.priority, pb::Priority::High as i32);
    assert_eq!(spec.tags, ["cli", "json-output"]);
    assert!(spec.instructions.ends_with(
        "\n\nAcceptance: `cargo test --test cli` passes, including a new test of `list --json`."
    ));
    assert_submits_unchanged(&mut client, &response).await;

    // The CLI was asked once, with the request and no tools.
    let asked = claude.message_requests();
    let main = asked
        .iter()
        .find(|r| {
            r.body
                .as_ref()
                .is_some_and(|b| b.to_string().contains(REQUEST))
        })
        .unwrap_or_else(|| {
            panic!(
                "no request carried the prompt:\n{}",
                claude.describe_requests()
            )
        });
    assert!(main.tool_names().is_empty(), "{:?}", main.tool_names());
    assert_eq!(scratch_left(&server), 0, "scratch directories are removed");
}

/// Many Elaborate calls at once start at most two agent CLIs at a time
/// (each is a whole agent process); every call still gets its spec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_take_turns_for_the_agent_clis() {
    if claude_or_skip("concurrent_calls_take_turns_for_the_agent_clis").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let claude = AnthropicMock::start(anthropic_mock::Script::Answer(model_answer("claude")));
    let server =
        start_server_with(|c| configure_claude(c, &claude.base_url(), home.path(), 0)).await;
    let scratch = server.data_dir().join("elaborate");
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..5 {
        let mut client = server.client().await;
        calls.spawn(
            async move { elaborate(&mut client, request(&format!("{REQUEST} ({i})"))).await },
        );
    }
    // Each call runs its CLI in a scratch directory of its own.
    let mut most = 0;
    while !calls.is_empty() {
        let at_once = std::fs::read_dir(&scratch).map_or(0, |d| d.count());
        most = most.max(at_once);
        while let Some(done) = calls.try_join_next() {
            let response = done.unwrap();
            assert_eq!(
                source(&response),
                pb::ElaborateSource::Claude,
                "{response:#?}"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(most >= 1, "the CLIs were seen running");
    assert!(most <= 2, "{most} agent CLIs ran at once");
    assert_eq!(scratch_left(&server), 0, "scratch directories are removed");
}

#[tokio::test]
async fn an_unreachable_local_model_falls_through_to_claude() {
    if claude_or_skip("an_unreachable_local_model_falls_through_to_claude").is_none() {
        return;
    }
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = tempfile::tempdir().unwrap();
    let claude = AnthropicMock::start(anthropic_mock::Script::Answer(model_answer("gemini")));
    let server = start_server_with(|c| {
        configure_claude(c, &claude.base_url(), home.path(), 0);
        no_clis_but_claude(c);
        c.local_model.endpoint = format!("http://127.0.0.1:{port}/v1");
        c.local_model.max_retries = 0;
    })
    .await;
    let mut client = server.client().await;

    let response = elaborate(&mut client, request(REQUEST)).await;
    assert_eq!(
        source(&response),
        pb::ElaborateSource::Claude,
        "{response:#?}"
    );
    assert!(
        response.notes[0].starts_with("local model: cannot reach"),
        "{:?}",
        response.notes
    );
    // The answer chose gemini, which cannot run here: the spec says auto.
    let agent = response.spec.clone().unwrap().agent.unwrap();
    assert_eq!(agent.r#type, pb::AgentType::Auto as i32);
    assert!(
        response.notes[1].contains("`gemini` cannot run"),
        "{:?}",
        response.notes
    );
    assert_submits_unchanged(&mut client, &response).await;
}

#[tokio::test]
async fn a_valid_local_answer_is_used_without_asking_a_cli() {
    let home = tempfile::tempdir().unwrap();
    // Claude would answer too, but must not be asked.
    let claude = AnthropicMock::start(anthropic_mock::Script::Answer(model_answer("claude")));
    let local = ChatMock::always(Reply::text(model_answer("local")));
    let server = start_server_with(|c| {
        configure_claude(c, &claude.base_url(), home.path(), 0);
        c.local_model.endpoint = local.endpoint();
    })
    .await;
    let mut client = server.client().await;

    let response = elaborate(&mut client, request(REQUEST)).await;
    assert_eq!(
        source(&response),
        pb::ElaborateSource::LocalModel,
        "{response:#?}"
    );
    assert_eq!(response.model, chat_mock::MOCK_MODEL);
    assert!(response.notes.is_empty(), "{:?}", response.notes);
    assert_eq!(claude.messages_calls(), 0);
    // One JSON-mode call with a bounded answer, carrying the request.
    let calls = local.requests();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body["response_format"]["type"], "json_object");
    assert!(calls[0].body["max_tokens"].as_u64().is_some_and(|n| n > 0));
    assert!(calls[0].prompt().contains(REQUEST));
    assert_submits_unchanged(&mut client, &response).await;
}

#[tokio::test]
async fn an_off_schema_local_model_falls_through_to_claude() {
    if claude_or_skip("an_off_schema_local_model_falls_through_to_claude").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let claude = AnthropicMock::start(anthropic_mock::Script::Answer(model_answer("claude")));
    let local = ChatMock::start(
        vec![
            Reply::text(r#"{"answer": 42, "agent": "claude"}"#),
            Reply::text("Sure! I would be glad to help you with that request."),
        ],
        Reply::Malformed,
    );
    let server = start_server_with(|c| {
        configure_claude(c, &claude.base_url(), home.path(), 0);
        c.local_model.endpoint = local.endpoint();
        c.local_model.max_retries = 0;
    })
    .await;
    let mut client = server.client().await;

    for expected in [
        "local model: answered no instructions",
        "local model: answered no JSON object (Sure! I would be glad",
        "local model: the model endpoint answered something unreadable",
    ] {
        let response = elaborate(&mut client, request(REQUEST)).await;
        assert_eq!(
            source(&response),
            pb::ElaborateSource::Claude,
            "{response:#?}"
        );
        assert!(
            response.notes[0].starts_with(expected),
            "{expected}: {:?}",
            response.notes
        );
        assert_submits_unchanged(&mut client, &response).await;
    }
    assert_eq!(local.chat_calls(), 3);
}

#[tokio::test]
async fn the_real_local_model_gives_a_valid_spec_or_a_clean_fallback() {
    let endpoint = common::local_llm_endpoint();
    let _turn = common::real_model_turn().await;
    let server = start_server_with(|c| {
        no_clis(c);
        c.local_model.endpoint = endpoint;
    })
    .await;
    let mut client = server.client().await;

    let response = elaborate(&mut client, request(REQUEST)).await;
    // A tiny model's answer is often off-schema: then the template answers,
    // saying what the model did. Either way the spec is valid.
    match source(&response) {
        pb::ElaborateSource::LocalModel => assert!(!response.model.is_empty()),
        pb::ElaborateSource::Template => {
            let first = &response.notes[0];
            assert!(
                first.starts_with("local model: answered")
                    || first.starts_with("local model: did not answer"),
                "the model was reached: {:?}",
                response.notes
            );
        }
        other => panic!("unexpected source {other:?}: {response:#?}"),
    }
    assert_submits_unchanged(&mut client, &response).await;
}

/// Only claude may run: gemini and codex name missing files.
fn no_clis_but_claude(c: &mut Config) {
    c.agents.gemini.command = "/nonexistent/gemini".into();
    c.agents.codex.command = "/nonexistent/codex".into();
}

#[tokio::test]
async fn when_claude_fails_gemini_writes_the_spec() {
    let test = "when_claude_fails_gemini_writes_the_spec";
    if claude_or_skip(test).is_none() || gemini_or_skip(test).is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let claude = AnthropicMock::start(anthropic_mock::Script::Overloaded);
    let gemini = GeminiMock::start(gemini_mock::Script::Answer(model_answer("gemini")));
    let server = start_server_with(|c| {
        configure_claude(c, &claude.base_url(), home.path(), 0);
        configure_gemini(c, &gemini);
    })
    .await;
    let mut client = server.client().await;

    let response = elaborate(&mut client, request(REQUEST)).await;
    assert_eq!(
        source(&response),
        pb::ElaborateSource::Gemini,
        "{response:#?}"
    );
    assert!(
        response.notes[1].starts_with("claude: ") && response.notes[1].contains("529"),
        "{:?}",
        response.notes
    );
    let agent = response.spec.clone().unwrap().agent.unwrap();
    assert_eq!(agent.r#type, pb::AgentType::Gemini as i32);
    assert_eq!(agent.model, "gemini-2.5-flash");
    assert!(claude.messages_calls() > 0 && gemini.model_calls() > 0);
    assert_submits_unchanged(&mut client, &response).await;
    assert_eq!(scratch_left(&server), 0);
}

#[tokio::test]
async fn when_every_path_fails_the_template_answers() {
    let server = start_server_with(no_clis).await;
    let mut client = server.client().await;
    let mut req = request(REQUEST);
    req.agent = pb::AgentType::Codex as i32;
    let response = elaborate(&mut client, req).await;

    assert_eq!(source(&response), pb::ElaborateSource::Template);
    assert_eq!(response.model, "");
    let notes = response.notes.join("\n");
    for expected in [
        "local model: not configured",
        "claude: the `/nonexistent/agent-cli` CLI is not installed",
        "gemini: the `/nonexistent/agent-cli` CLI is not installed",
    ] {
        assert!(notes.contains(expected), "{notes}");
    }
    let spec = response.spec.clone().unwrap();
    assert_eq!(spec.name, REQUEST);
    assert!(spec.instructions.starts_with(REQUEST));
    // The caller's agent is kept even though it cannot run now.
    assert_eq!(spec.agent.unwrap().r#type, pb::AgentType::Codex as i32);
    assert_submits_unchanged(&mut client, &response).await;
}

#[tokio::test]
async fn bad_requests_are_refused_naming_the_field_and_store_nothing() {
    let server = start_server_with(no_clis).await;
    let mut client = server.client().await;
    let cases = [
        (request(" \n "), "text"),
        (
            pb::ElaborateRequest {
                project: "/etc".into(),
                ..request(REQUEST)
            },
            "project",
        ),
        (
            pb::ElaborateRequest {
                project: "nope".into(),
                ..request(REQUEST)
            },
            "project",
        ),
        // Two projects are configured: one must be named.
        (
            pb::ElaborateRequest {
                project: String::new(),
                ..request(REQUEST)
            },
            "project",
        ),
        (
            pb::ElaborateRequest {
                agent: 42,
                ..request(REQUEST)
            },
            "agent",
        ),
    ];
    for (req, field) in cases {
        let status = client.elaborate(req.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{req:?}: {status:?}");
        assert!(
            status.message().starts_with(&format!("{field}: ")),
            "{req:?}: {}",
            status.message()
        );
    }
    assert!(common::all_tasks(&mut client).await.is_empty());
}

#[tokio::test]
async fn elaborate_submit_from_the_cli_prints_the_spec_and_the_task() {
    if claude_or_skip("elaborate_submit_from_the_cli_prints_the_spec_and_the_task").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let claude = AnthropicMock::start(anthropic_mock::Script::Answer(model_answer("claude")));
    let server =
        start_server_with(|c| configure_claude(c, &claude.base_url(), home.path(), 0)).await;
    let out = tokio::process::Command::new(BIN)
        .args(["elaborate", REQUEST, "--project", "demo", "--submit"])
        .args(["--server", &server.url()])
        .env_remove("CLAUDOMATOR_TOKEN")
        .output()
        .await
        .expect("run the cli");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.starts_with("# elaborated by claude (claude-sonnet-4-5)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("# note: local model: not configured"),
        "{stdout}"
    );
    let submitted = stdout
        .lines()
        .find_map(|l| l.strip_prefix("submitted "))
        .unwrap_or_else(|| panic!("no task id printed:\n{stdout}"));
    let id = submitted.split_whitespace().next().unwrap();

    // The printed spec is a task file `submit --file` reads.
    let body: String = stdout
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("submitted "))
        .collect::<Vec<_>>()
        .join("\n");
    let file: toml::Table = toml::from_str(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert_eq!(file["name"].as_str(), Some("Add --json to list"));

    let mut client = server.client().await;
    let task = common::get(&mut client, id).await;
    let spec = task.spec.unwrap();
    assert_eq!(spec.name, "Add --json to list");
    assert_eq!(spec.agent.unwrap().r#type, pb::AgentType::Claude as i32);
}

#[tokio::test]
async fn elaborate_json_from_the_cli_says_the_source() {
    let server = start_server_with(no_clis).await;
    let out = tokio::process::Command::new(BIN)
        .args(["elaborate", REQUEST, "-p", "other", "--json"])
        .args(["--server", &server.url()])
        .env_remove("CLAUDOMATOR_TOKEN")
        .output()
        .await
        .expect("run the cli");
    assert!(out.status.success(), "{out:?}");
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["source"], "template");
    assert_eq!(value["spec"]["project"], "other");
    assert!(
        value["notes"].as_array().is_some_and(|n| n.len() == 4),
        "{value}"
    );

    // A bad request exits 2 with the field named.
    let out = tokio::process::Command::new(BIN)
        .args(["elaborate", "", "-p", "demo"])
        .args(["--server", &server.url()])
        .env_remove("CLAUDOMATOR_TOKEN")
        .output()
        .await
        .expect("run the cli");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("text: must not be empty"));
}
