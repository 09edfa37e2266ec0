//! The chain with a fake chat model and fake agent CLIs; the answers' lenient
//! reading, table-driven.

use std::sync::Mutex;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::core::llm::{ChatResponse, ChatStream, LlmError};
use crate::core::logs::LogWriter;
use crate::core::model::Priority;
use crate::runners::{AgentProbe, AskError, RunOutcome, RunRequest, Verdict};

fn rules() -> TaskRules {
    TaskRules {
        projects: vec!["demo".into(), "other".into()],
        ..TaskRules::default()
    }
}

fn models() -> HashMap<AgentType, String> {
    HashMap::from([(AgentType::Claude, "claude-sonnet-4-5".to_string())])
}

fn read(answer: &str, agent: Option<AgentType>) -> Result<(TaskSpec, Vec<String>), String> {
    let rules = rules();
    let models = models();
    let ctx = Context {
        project: "demo",
        available: &[AgentType::Claude, AgentType::Gemini],
        agent,
        models: &models,
        rules: &rules,
    };
    draft::spec_from_answer(answer, &ctx).map_err(|e| e.to_string())
}

fn good_answer() -> serde_json::Value {
    json!({
        "name": "Add a --json flag to list",
        "instructions": "Add a --json flag to `list` that prints one JSON object per task.",
        "acceptance": "`cargo test --test cli` passes with a new test of --json.",
        "agent": "claude",
        "model": "",
        "allowed_tools": ["Read", "Edit", "Bash"],
        "max_budget_usd": 2.5,
        "timeout_minutes": 45,
        "priority": "high",
        "tags": ["cli", "Output Format"]
    })
}

#[test]
fn a_good_answer_becomes_a_full_spec() {
    let (spec, notes) = read(&good_answer().to_string(), None).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(spec.name, "Add a --json flag to list");
    assert!(spec.instructions.starts_with("Add a --json flag"));
    assert!(
        spec.instructions
            .ends_with("\n\nAcceptance: `cargo test --test cli` passes with a new test of --json."),
        "{}",
        spec.instructions
    );
    assert_eq!(spec.project, "demo");
    assert_eq!(spec.agent.agent_type, "claude");
    assert_eq!(spec.agent.model, "claude-sonnet-4-5");
    assert_eq!(spec.agent.allowed_tools, ["Read", "Edit", "Bash"]);
    assert_eq!(spec.agent.max_budget_usd, 2.5);
    assert_eq!(spec.timeout, "45m");
    assert_eq!(spec.priority, Priority::High.as_str());
    assert_eq!(spec.tags, ["cli", "output-format"]);
}

#[test]
fn answers_are_read_leniently() {
    let fenced = format!(
        "Sure! Here is the spec:\n```json\n{}\n```\nLet me know.",
        good_answer()
    );
    assert!(read(&fenced, None).is_ok());

    let wrapped = json!({"task": good_answer()}).to_string();
    assert_eq!(
        read(&wrapped, None).unwrap().0.name,
        "Add a --json flag to list"
    );

    // Loose types: steps as a list, numbers as strings, tags as one string,
    // the agent as an object, an acceptance line inside the instructions.
    let loose = json!({
        "title": "Fix it",
        "instructions": ["Find the flaky test.", "Make it deterministic.", "Acceptance: it passes 20 runs in a row."],
        "agent": {"type": "gemini", "model": "gemini-2.5-flash"},
        "budget": "$1.50",
        "timeout": 20,
        "priority": "medium",
        "tags": "tests, flaky"
    });
    let (spec, _) = read(&loose.to_string(), None).unwrap();
    assert_eq!(spec.name, "Fix it");
    assert_eq!(spec.instructions.matches("Acceptance").count(), 1);
    assert_eq!(spec.agent.agent_type, "gemini");
    assert_eq!(spec.agent.model, "gemini-2.5-flash");
    assert_eq!(spec.agent.max_budget_usd, 1.5);
    assert_eq!(spec.timeout, "20m");
    assert_eq!(spec.priority, "normal");
    assert_eq!(spec.tags, ["tests", "flaky"]);
}

#[test]
fn what_needs_no_judgement_is_repaired_with_a_note() {
    let mut answer = good_answer();
    answer["agent"] = json!("codex");
    let (spec, notes) = read(&answer.to_string(), None).unwrap();
    assert_eq!(spec.agent.agent_type, "auto");
    assert!(notes[0].contains("codex"), "{notes:?}");

    let mut answer = good_answer();
    answer["model"] = json!("gpt-4o");
    let (spec, notes) = read(&answer.to_string(), None).unwrap();
    assert_eq!(spec.agent.model, "claude-sonnet-4-5");
    assert!(notes[0].contains("gpt-4o"), "{notes:?}");

    // The caller's agent always wins.
    let (spec, _) = read(&good_answer().to_string(), Some(AgentType::Gemini)).unwrap();
    assert_eq!(spec.agent.agent_type, "gemini");
    assert_eq!(spec.agent.model, "");
}

#[test]
fn unusable_answers_say_why() {
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut answer = good_answer();
        f(&mut answer);
        read(&answer.to_string(), None).unwrap_err()
    };
    let cases: Vec<(String, &str)> = vec![
        (
            read("I cannot help with that.", None).unwrap_err(),
            "no JSON object",
        ),
        (read("[1, 2]", None).unwrap_err(), "no JSON object"),
        (
            read("{\"name\": \"x\"}", None).unwrap_err(),
            "no instructions",
        ),
        (
            with(&|a| {
                a.as_object_mut().unwrap().remove("acceptance");
            }),
            "no acceptance",
        ),
        (with(&|a| a["agent"] = json!("robot")), "unknown agent"),
        (
            with(&|a| a["timeout_minutes"] = json!(100_000)),
            "spec.timeout",
        ),
        (with(&|a| a["timeout_minutes"] = json!("soon")), "timeout"),
        (
            with(&|a| a["max_budget_usd"] = json!(-3)),
            "spec.agent.max_budget_usd",
        ),
        (with(&|a| a["priority"] = json!("asap")), "spec.priority"),
    ];
    for (err, expected) in cases {
        assert!(
            err.contains(expected),
            "{err:?} should mention {expected:?}"
        );
    }
}

/// A chat model that gives one scripted answer, or fails.
struct FakeChat {
    answer: Result<String, LlmError>,
    calls: Mutex<Vec<ChatRequest>>,
}

impl FakeChat {
    fn new(answer: Result<&str, LlmError>) -> Arc<Self> {
        Arc::new(FakeChat {
            answer: answer.map(str::to_string),
            calls: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait::async_trait]
impl ChatModel for FakeChat {
    fn model(&self) -> &str {
        "fake-local"
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        self.calls.lock().unwrap().push(request);
        self.answer.clone().map(|content| ChatResponse {
            content,
            ..ChatResponse::default()
        })
    }

    async fn chat_stream(&self, _request: ChatRequest) -> Result<ChatStream, LlmError> {
        Err(LlmError::NotConfigured)
    }
}

/// An agent CLI that answers one scripted text, fails, or never answers.
struct FakeCli {
    agent: AgentType,
    installed: bool,
    answer: Option<Result<String, String>>,
    asked: Mutex<Vec<AskRequest>>,
}

impl FakeCli {
    fn new(agent: AgentType, answer: Option<Result<&str, &str>>) -> Arc<Self> {
        Arc::new(FakeCli {
            agent,
            installed: true,
            answer: answer.map(|a| a.map(str::to_string).map_err(str::to_string)),
            asked: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait::async_trait]
impl Runner for FakeCli {
    fn agent(&self) -> AgentType {
        self.agent
    }

    fn unavailable(&self) -> Option<String> {
        (!self.installed).then(|| format!("the `{}` CLI is not installed", self.agent))
    }

    async fn probe(&self) -> AgentProbe {
        AgentProbe::default()
    }

    fn recover(&self, _model: &str, _lines: &[String]) -> RunOutcome {
        RunOutcome::new(Verdict::Failed("fake".into()))
    }

    async fn run(&self, _r: RunRequest, _l: &mut LogWriter, _c: CancellationToken) -> RunOutcome {
        RunOutcome::new(Verdict::Failed("fake".into()))
    }

    async fn ask(
        &self,
        request: AskRequest,
        cancel: CancellationToken,
    ) -> Result<String, AskError> {
        assert!(request.workdir.is_dir(), "the scratch directory exists");
        self.asked.lock().unwrap().push(request);
        match &self.answer {
            Some(answer) => answer.clone().map_err(|why| AskError::NoAnswer {
                why,
                stderr: String::new(),
            }),
            None => {
                cancel.cancelled().await;
                Err(AskError::NoAnswer {
                    why: "was stopped".into(),
                    stderr: String::new(),
                })
            }
        }
    }
}

struct Setup {
    elaborator: Elaborator,
    scratch: tempfile::TempDir,
}

fn setup(chat: Option<Arc<dyn ChatModel>>, runners: Vec<Arc<dyn Runner>>) -> Setup {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = ElaborateConfig::new(scratch.path().join("elaborate"), models());
    config.cli_timeout = Duration::from_millis(200);
    let elaborator = Elaborator::new(rules(), chat, runners, config, CancellationToken::new());
    Setup {
        elaborator,
        scratch,
    }
}

fn request(text: &str) -> ElaborateRequest {
    ElaborateRequest {
        text: text.into(),
        project: "demo".into(),
        agent: String::new(),
    }
}

#[tokio::test]
async fn a_valid_local_answer_is_used_as_is() {
    let chat = FakeChat::new(Ok(&good_answer().to_string()));
    let claude = FakeCli::new(AgentType::Claude, Some(Ok("unused")));
    let s = setup(Some(chat.clone()), vec![claude.clone()]);
    let done = s
        .elaborator
        .elaborate(request("add --json to list"))
        .await
        .unwrap();
    assert_eq!(done.source, ElaborateSource::LocalModel);
    assert_eq!(done.model, "fake-local");
    assert!(done.notes.is_empty(), "{:?}", done.notes);
    assert!(claude.asked.lock().unwrap().is_empty());
    let call = &chat.calls.lock().unwrap()[0];
    assert!(call.json && call.max_tokens > 0);
    assert!(call.messages[1].content.contains("add --json to list"));
}

#[tokio::test]
async fn an_invalid_answer_falls_to_the_next_path() {
    let chat = FakeChat::new(Ok("{\"name\": \"only a name\"}"));
    let claude = FakeCli::new(AgentType::Claude, Some(Ok("no json, sorry")));
    let gemini = FakeCli::new(
        AgentType::Gemini,
        Some(Ok(&format!("```json\n{}\n```", good_answer()))),
    );
    let s = setup(Some(chat), vec![claude.clone(), gemini.clone()]);
    let done = s
        .elaborator
        .elaborate(request("add --json to list"))
        .await
        .unwrap();
    assert_eq!(done.source, ElaborateSource::Gemini);
    assert_eq!(done.notes.len(), 2, "{:?}", done.notes);
    assert!(done.notes[0].starts_with("local model: answered no instructions"));
    assert!(done.notes[1].starts_with("claude: answered no JSON object"));
    // Each CLI got the whole prompt with the claude model from config.
    let asked = &claude.asked.lock().unwrap()[0];
    assert!(asked.prompt.contains("Request: add --json to list"));
    assert_eq!(asked.model, "claude-sonnet-4-5");
    // Scratch directories are gone.
    let left = std::fs::read_dir(s.scratch.path().join("elaborate"))
        .unwrap()
        .count();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn when_every_path_fails_the_template_answers() {
    let chat = FakeChat::new(Err(LlmError::Unreachable("connection refused".into())));
    let claude = Arc::new(FakeCli {
        installed: false,
        ..Arc::into_inner(FakeCli::new(AgentType::Claude, None)).unwrap()
    });
    // Gemini hangs: the CLI timeout stops it.
    let gemini = FakeCli::new(AgentType::Gemini, None);
    let s = setup(Some(chat), vec![claude, gemini]);
    let done = s
        .elaborator
        .elaborate(request("  add --json to list "))
        .await
        .unwrap();
    assert_eq!(done.source, ElaborateSource::Template);
    let notes = done.notes.join("\n");
    for expected in [
        "connection refused",
        "not installed",
        "did not answer within",
    ] {
        assert!(notes.contains(expected), "{notes}");
    }
    assert_eq!(done.spec.name, "add --json to list");
    assert!(done.spec.instructions.contains("\n\nAcceptance: "));
    assert_eq!(done.spec.agent.agent_type, "auto");
    // SubmitTask would take it unchanged.
    let again = draft_checked(&done.spec);
    assert_eq!(again, done.spec);
}

#[tokio::test]
async fn with_nothing_configured_the_template_names_each_absence() {
    let s = setup(None, Vec::new());
    let mut req = request("write docs");
    req.agent = "gemini".into();
    let done = s.elaborator.elaborate(req).await.unwrap();
    assert_eq!(done.source, ElaborateSource::Template);
    assert_eq!(done.spec.agent.agent_type, "gemini");
    assert!(done.notes[0].contains("local model: not configured"));
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let s = setup(None, Vec::new());
    let cases = [
        (request("   "), "text"),
        (request(&"x".repeat(MAX_TEXT_BYTES + 1)), "text"),
        (
            ElaborateRequest {
                project: "/etc".into(),
                ..request("do it")
            },
            "project",
        ),
        (
            ElaborateRequest {
                project: String::new(),
                ..request("do it")
            },
            "project",
        ),
        (
            ElaborateRequest {
                agent: "robot".into(),
                ..request("do it")
            },
            "agent",
        ),
    ];
    for (req, field) in cases {
        match s.elaborator.elaborate(req).await {
            Err(CoreError::InvalidArgument(found)) => assert_eq!(found.first_field(), field),
            other => panic!("expected an invalid {field}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_stopping_server_refuses_instead_of_answering_a_template() {
    let shutdown = CancellationToken::new();
    let scratch = tempfile::tempdir().unwrap();
    let elaborator = Elaborator::new(
        rules(),
        None,
        vec![FakeCli::new(AgentType::Claude, None)],
        ElaborateConfig::new(scratch.path().to_path_buf(), models()),
        shutdown.clone(),
    );
    shutdown.cancel();
    let err = elaborator.elaborate(request("do it")).await.unwrap_err();
    assert!(matches!(err, CoreError::Unavailable(_)), "{err:?}");
}

/// The spec as SubmitTask would store it.
fn draft_checked(spec: &TaskSpec) -> TaskSpec {
    let request = crate::core::model::SubmitRequest {
        spec: spec.clone(),
        ..Default::default()
    };
    let task = crate::core::validate::validate(&request, &rules()).unwrap();
    TaskSpec {
        max_attempts: spec.max_attempts,
        ..task.spec()
    }
}
