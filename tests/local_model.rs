//! The OpenAI-compatible client: every fault the scripted chat server can
//! inject ends in a retry, a clear error or a clean end; then the same
//! client, the classifier and the summary fallback against the real local
//! model (llama.cpp with a tiny model), asserting behaviour, not content.

#[path = "support/chat_mock.rs"]
mod chat_mock;
mod common;
#[path = "support/http_thread.rs"]
mod http_thread;

use std::time::Duration;

use chat_mock::{ChatMock, MOCK_MODEL, PROMPT_TOKENS, Reply};
use claudomator::core::classify::{AgentState, classify};
use claudomator::core::llm::{
    ChatChunk, ChatMessage, ChatModel, ChatRequest, ChatStream, LlmError, extract_json_object,
};
use claudomator::core::model::{AgentChoice, AgentType, SubmitRequest, TaskSpec};
use claudomator::llm::{ClientSettings, OpenAiClient};
use tokio_stream::StreamExt;

fn new_client(endpoint: &str, adjust: impl FnOnce(&mut ClientSettings)) -> OpenAiClient {
    let mut settings = ClientSettings::new(endpoint);
    settings.timeout = Duration::from_secs(20);
    settings.retry_base = Duration::from_millis(50);
    adjust(&mut settings);
    OpenAiClient::new(settings).expect("client builds")
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest::new(vec![ChatMessage::user(text)], 64)
}

/// Every chunk of a stream until it ends: the text, the `Done`, or the error.
async fn drain(mut stream: ChatStream) -> (String, Option<ChatChunk>, Option<LlmError>) {
    let mut text = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(ChatChunk::Delta(delta)) => text.push_str(&delta),
            Ok(done) => return (text, Some(done), None),
            Err(e) => return (text, None, Some(e)),
        }
    }
    (text, None, None)
}

#[tokio::test]
async fn a_whole_answer_comes_with_usage_and_the_request_carries_its_settings() {
    let mock = ChatMock::always(Reply::text("{\"agent\": \"local\"}"));
    let client = new_client(&mock.endpoint(), |s| {
        s.model = "tiny".into();
        s.api_key = Some("k-123".into());
    });
    let mut request = ask("pick");
    request.json = true;
    request.temperature = Some(0.0);
    let answer = client.chat(request).await.unwrap();
    assert_eq!(answer.content, "{\"agent\": \"local\"}");
    assert_eq!(answer.model, MOCK_MODEL);
    assert_eq!(answer.usage.prompt_tokens, PROMPT_TOKENS);
    assert_eq!(answer.finish_reason, "stop");
    let sent = &mock.requests()[0];
    assert!(sent.path.ends_with("/v1/chat/completions"), "{}", sent.path);
    assert_eq!(sent.authorization.as_deref(), Some("Bearer k-123"));
    assert_eq!(sent.body["model"], "tiny");
    assert_eq!(sent.body["max_tokens"], 64);
    assert_eq!(sent.body["temperature"], 0.0);
    assert_eq!(sent.body["response_format"]["type"], "json_object");
    assert_eq!(sent.body["stream"], false);
    assert_eq!(client.models().await.unwrap(), vec![MOCK_MODEL.to_string()]);
}

#[tokio::test]
async fn a_stream_puts_the_deltas_together_and_ends_in_done_with_usage() {
    let text = "Hello from the mock. ## Summary\nSaid hello.";
    let mock = ChatMock::always(Reply::text(text));
    let client = new_client(&mock.endpoint(), |_| {});
    let (answer, done, error) = drain(client.chat_stream(ask("hi")).await.unwrap()).await;
    assert_eq!(error, None);
    assert_eq!(answer, text);
    let Some(ChatChunk::Done {
        usage,
        finish_reason,
        model,
    }) = done
    else {
        panic!("no Done: {done:?}");
    };
    assert_eq!(finish_reason, "stop");
    assert_eq!(model, MOCK_MODEL);
    assert_eq!(usage.prompt_tokens, PROMPT_TOKENS);
    assert_eq!(usage.completion_tokens, 7);
    let sent = &mock.requests()[0];
    assert_eq!(sent.body["stream"], true);
    assert_eq!(sent.body["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn a_429_is_retried_after_what_retry_after_asks_in_seconds_or_as_a_date() {
    let in_seconds = || "1".to_string();
    // Whole seconds: 3 s from now is at least 2 s away when it is read.
    let as_a_date =
        || httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3));
    for retry_after in [&in_seconds as &dyn Fn() -> String, &as_a_date] {
        let retry_after = retry_after();
        let mock = ChatMock::start(
            vec![Reply::status(429, Some(&retry_after))],
            Reply::text("ok"),
        );
        let client = new_client(&mock.endpoint(), |_| {});
        let answer = client.chat(ask("hi")).await.unwrap();
        assert_eq!(answer.content, "ok");
        let calls = mock.requests();
        assert_eq!(calls.len(), 2, "{retry_after}");
        // The wait is at least what was asked (the date has 1 s resolution),
        // far more than the 50 ms backoff alone.
        let waited = calls[1].at - calls[0].at;
        assert!(
            waited >= Duration::from_millis(900),
            "{retry_after}: {waited:?}"
        );
    }
}

#[tokio::test]
async fn a_503_is_retried_then_given_up_with_the_status() {
    let mock = ChatMock::always(Reply::status(503, None));
    let client = new_client(&mock.endpoint(), |s| s.max_retries = 2);
    let err = client.chat(ask("hi")).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::Status { status: 503, message } if message.contains("mock")),
        "{err:?}"
    );
    assert_eq!(mock.chat_calls(), 3, "one try and two retries");
    // A 400 is the caller's mistake: not retried.
    let mock = ChatMock::always(Reply::status(400, None));
    let client = new_client(&mock.endpoint(), |s| s.max_retries = 2);
    let err = client.chat(ask("hi")).await.unwrap_err();
    assert!(
        matches!(err, LlmError::Status { status: 400, .. }),
        "{err:?}"
    );
    assert_eq!(mock.chat_calls(), 1);
}

#[tokio::test]
async fn a_retry_after_beyond_the_budget_ends_at_once_as_rate_limited() {
    let mock = ChatMock::always(Reply::status(429, Some("3600")));
    let client = new_client(&mock.endpoint(), |s| s.timeout = Duration::from_secs(5));
    let err = client.chat(ask("hi")).await.unwrap_err();
    assert_eq!(
        err,
        LlmError::RateLimited {
            message: "mock: status 429".into(),
            retry_after: Some(Duration::from_secs(3600)),
        }
    );
    assert_eq!(mock.chat_calls(), 1);
    // Out of retries, a 429 is rate limited too.
    let mock = ChatMock::always(Reply::status(429, None));
    let client = new_client(&mock.endpoint(), |s| s.max_retries = 1);
    let err = client.chat(ask("hi")).await.unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::RateLimited {
                retry_after: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(mock.chat_calls(), 2);
}

#[tokio::test]
async fn a_hang_past_the_timeout_is_a_timeout_whole_or_streamed() {
    let mock = ChatMock::always(Reply::Hang);
    let client = new_client(&mock.endpoint(), |_| {});
    let mut request = ask("hi");
    request.timeout = Some(Duration::from_millis(300));
    let err = client.chat(request.clone()).await.unwrap_err();
    assert_eq!(err, LlmError::Timeout(Duration::from_millis(300)));
    let Err(err) = client.chat_stream(request).await else {
        panic!("a stream that never starts is an error");
    };
    assert_eq!(err, LlmError::Timeout(Duration::from_millis(300)));

    // A stream that goes silent longer than the timeout ends in one too.
    let mock = ChatMock::always(Reply::Slow {
        text: "one two three".into(),
        delay: Duration::from_secs(30),
    });
    let client = new_client(&mock.endpoint(), |s| s.timeout = Duration::from_millis(300));
    let (_, done, error) = drain(client.chat_stream(ask("hi")).await.unwrap()).await;
    assert_eq!(done, None);
    assert_eq!(error, Some(LlmError::Timeout(Duration::from_millis(300))));
}

#[tokio::test]
async fn an_unreachable_endpoint_is_retried_then_unreachable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = new_client(&format!("http://127.0.0.1:{port}/v1"), |s| {
        s.max_retries = 1
    });
    let err = client.chat(ask("hi")).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::Unreachable(m) if m.contains("onnect")),
        "{err:?}"
    );
    assert!(matches!(
        client.models().await,
        Err(LlmError::Unreachable(_))
    ));
}

#[tokio::test]
async fn empty_malformed_and_truncated_answers_end_cleanly() {
    // Empty: a well-formed answer with no text; the caller decides.
    let mock = ChatMock::always(Reply::Empty);
    let client = new_client(&mock.endpoint(), |_| {});
    assert_eq!(client.chat(ask("hi")).await.unwrap().content, "");
    let (text, done, error) = drain(client.chat_stream(ask("hi")).await.unwrap()).await;
    assert_eq!((text.as_str(), error), ("", None));
    assert!(matches!(done, Some(ChatChunk::Done { .. })));

    // Malformed: the good part, then an error naming what was wrong.
    let mock = ChatMock::always(Reply::Malformed);
    let client = new_client(&mock.endpoint(), |_| {});
    let err = client.chat(ask("hi")).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::Malformed(m) if m.contains("not JSON")),
        "{err:?}"
    );
    let (text, done, error) = drain(client.chat_stream(ask("hi")).await.unwrap()).await;
    assert_eq!(text, "fine so far");
    assert_eq!(done, None);
    assert!(
        matches!(&error, Some(LlmError::Malformed(m)) if m.contains("unreadable stream chunk")),
        "{error:?}"
    );

    // Truncated: the connection closes before the end.
    let mock = ChatMock::always(Reply::Truncated);
    let client = new_client(&mock.endpoint(), |_| {});
    let (text, done, error) = drain(client.chat_stream(ask("hi")).await.unwrap()).await;
    assert_eq!(text, "cut short here");
    assert_eq!(done, None);
    assert!(matches!(error, Some(LlmError::Malformed(_))), "{error:?}");
}

#[tokio::test]
async fn dropping_a_stream_closes_the_connection() {
    let mock = ChatMock::always(Reply::Slow {
        text: "a b c d e f g h i j".into(),
        delay: Duration::from_millis(200),
    });
    let client = new_client(&mock.endpoint(), |_| {});
    let mut stream = client.chat_stream(ask("hi")).await.unwrap();
    assert!(matches!(stream.next().await, Some(Ok(ChatChunk::Delta(_)))));
    drop(stream);
    assert!(
        mock.eventually(Duration::from_secs(10), |m| m.streams_aborted() == 1)
            .await,
        "the server still streams"
    );
    assert_eq!(mock.streams_completed(), 0);
}

fn auto_task(instructions: &str) -> claudomator::core::model::Task {
    let request = SubmitRequest {
        spec: TaskSpec {
            name: "route me".into(),
            instructions: instructions.into(),
            project: "demo".into(),
            ..TaskSpec::default()
        },
        ..SubmitRequest::default()
    };
    let rules = claudomator::core::validate::TaskRules {
        projects: vec!["demo".into()],
        ..Default::default()
    };
    claudomator::core::validate::validate(&request, &rules).unwrap()
}

/// Claude missing, Codex set aside, Gemini and Local free.
fn live_state() -> Vec<AgentState> {
    let free = |agent| AgentState {
        agent,
        unavailable: None,
        running: 0,
        max_concurrent: 2,
        limited_until: None,
        models: Vec::new(),
    };
    vec![
        AgentState {
            unavailable: Some("the `claude` CLI is not installed".into()),
            ..free(AgentType::Claude)
        },
        AgentState {
            limited_until: Some(claudomator::core::model::now_millis() + 60_000),
            ..free(AgentType::Codex)
        },
        AgentState {
            models: vec!["gemini-2.5-flash".into()],
            ..free(AgentType::Gemini)
        },
        free(AgentType::Local),
    ]
}

const ORDER: [AgentType; 4] = [
    AgentType::Claude,
    AgentType::Codex,
    AgentType::Gemini,
    AgentType::Local,
];

#[tokio::test]
async fn the_classifier_takes_a_valid_answer_and_falls_back_on_anything_else() {
    let task = auto_task("Write a haiku about Rust.");
    let states = live_state();
    let timeout = Duration::from_millis(500);
    let cases = [
        (
            Reply::text("{\"agent\": \"local\", \"model\": \"\", \"reason\": \"text only\"}"),
            AgentType::Local,
            AgentChoice::Model,
            "text only",
        ),
        (
            Reply::text("{\"agent\": \"codex\", \"reason\": \"best\"}"),
            AgentType::Gemini,
            AgentChoice::Rule,
            "names codex, which cannot start now",
        ),
        (
            Reply::text("I would pick claude."),
            AgentType::Gemini,
            AgentChoice::Rule,
            "is not a JSON object",
        ),
        (
            Reply::Empty,
            AgentType::Gemini,
            AgentChoice::Rule,
            "is not a JSON object",
        ),
        (
            Reply::Hang,
            AgentType::Gemini,
            AgentChoice::Rule,
            "did not answer within 500ms",
        ),
        (
            Reply::status(500, None),
            AgentType::Gemini,
            AgentChoice::Rule,
            "the local model failed",
        ),
    ];
    for (reply, agent, by, why) in cases {
        let label = format!("{reply:?}");
        let mock = ChatMock::always(reply);
        let client = new_client(&mock.endpoint(), |s| s.max_retries = 0);
        let choice = classify(
            Some(&client as &dyn ChatModel),
            &task,
            &states,
            &ORDER,
            timeout,
        )
        .await
        .expect("an agent can start");
        assert_eq!(
            (choice.agent, choice.by),
            (agent, by),
            "{label}: {choice:?}"
        );
        assert!(choice.reason.contains(why), "{label}: {}", choice.reason);
        let sent = &mock.requests()[0];
        assert_eq!(sent.body["response_format"]["type"], "json_object");
        assert!(sent.body["max_tokens"].as_u64().unwrap() <= 128);
        assert!(sent.prompt().contains("Write a haiku about Rust."));
    }
    // No model: the rule, without asking anyone.
    let choice = classify(None, &task, &states, &ORDER, timeout)
        .await
        .unwrap();
    assert_eq!(
        (choice.agent, choice.by),
        (AgentType::Gemini, AgentChoice::Rule)
    );
    assert!(
        choice.reason.contains("no local model"),
        "{}",
        choice.reason
    );
}

// ---- against the real model ----

fn real_client() -> OpenAiClient {
    let endpoint = common::local_llm_endpoint();
    new_client(&endpoint, |s| s.timeout = Duration::from_secs(120))
}

#[tokio::test]
async fn the_real_model_answers_whole_streamed_and_in_json_mode() {
    let _turn = common::real_model_turn().await;
    let client = real_client();
    assert!(!client.models().await.unwrap().is_empty());

    let (text, done, error) = drain(
        client
            .chat_stream(ask("Say hello in five words."))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(error, None);
    assert!(!text.is_empty());
    let Some(ChatChunk::Done { finish_reason, .. }) = done else {
        panic!("no Done: {done:?}");
    };
    assert!(
        ["stop", "length"].contains(&finish_reason.as_str()),
        "{finish_reason}"
    );

    let mut request = ChatRequest::new(
        vec![
            ChatMessage::system("Answer with a JSON object {\"colour\": \"<name>\"}."),
            ChatMessage::user("Name a colour."),
        ],
        32,
    );
    request.json = true;
    let answer = client.chat(request).await.unwrap();
    assert!(answer.usage.completion_tokens > 0, "{answer:?}");
    assert!(
        answer.usage.completion_tokens <= 32,
        "max_tokens is honoured"
    );
    // JSON mode constrains the grammar, but a cut answer may not close:
    // whatever it is, the lenient parse either finds an object or says no.
    let _ = extract_json_object(&answer.content);
}

#[tokio::test]
async fn calls_through_one_client_take_turns_and_never_cut_each_other_short() {
    let _turn = common::real_model_turn().await;
    let client = std::sync::Arc::new(real_client());
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..3 {
        let client = client.clone();
        calls.spawn(async move {
            let mut request = ask(&format!("Count from {i} to {}.", i + 5));
            request.max_tokens = 24;
            drain(client.chat_stream(request).await.unwrap()).await
        });
    }
    while let Some(result) = calls.join_next().await {
        let (text, done, error) = result.unwrap();
        assert_eq!(
            error, None,
            "a stream was cut short (text so far: {text:?})"
        );
        assert!(matches!(done, Some(ChatChunk::Done { .. })));
    }
}

#[tokio::test]
async fn the_real_model_classifies_into_an_agent_that_can_start_or_the_rule_decides() {
    let _turn = common::real_model_turn().await;
    let client = real_client();
    let task = auto_task("Explain in two sentences what a mutex is. No code changes.");
    let states = live_state();
    let choice = classify(
        Some(&client as &dyn ChatModel),
        &task,
        &states,
        &ORDER,
        Duration::from_secs(60),
    )
    .await
    .expect("two agents can start");
    assert!(
        [AgentType::Gemini, AgentType::Local].contains(&choice.agent),
        "{choice:?}"
    );
    assert!(!choice.reason.is_empty());
    if choice.by == AgentChoice::Rule {
        assert_eq!(
            choice.agent,
            AgentType::Gemini,
            "the rule's first free agent"
        );
    }
    println!("real model classification: {choice:?}");
}

#[tokio::test]
async fn the_real_model_writes_a_summary_or_says_why_not() {
    let _turn = common::real_model_turn().await;
    let client = real_client();
    let agent_text = "I opened src/lib.rs, renamed the function parse to parse_config, \
                      updated the two callers, and ran cargo test: 14 passed."
        .repeat(3);
    match claudomator::core::summary::summarize(&client, &agent_text).await {
        Ok(summary) => {
            assert!(!summary.trim().is_empty());
            assert!(summary.chars().count() <= 1001);
        }
        Err(e) => assert!(matches!(e, LlmError::Malformed(_)), "{e:?}"),
    }
}
