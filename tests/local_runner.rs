//! End to end over gRPC: tasks with agent `local` run on an OpenAI-compatible
//! model (the scripted chat server for faults, the real llama.cpp server for
//! behaviour), `auto` tasks are routed by the model or by the rule, and the
//! model writes the summaries agents leave out.

#[path = "support/chat_mock.rs"]
mod chat_mock;
mod common;
#[path = "support/http_thread.rs"]
mod http_thread;

use std::time::Duration;

use chat_mock::{ChatMock, PROMPT_TOKENS, Reply};
use claudomator::config::Config;
use claudomator::proto as pb;
use common::{
    Client, ENDED, TestServer, agent_spec, executions, spec, start_server_with, submit,
    wait_completed, wait_for,
};
use tokio_stream::StreamExt;

/// A running server whose local model is `endpoint` and whose agent CLIs
/// are all missing (unless `adjust` names one).
async fn start(endpoint: &str, adjust: impl FnOnce(&mut Config)) -> TestServer {
    let endpoint = endpoint.to_string();
    start_server_with(move |c| {
        c.executor.enabled = true;
        c.executor.poll_interval = "100ms".into();
        c.executor.retry_base = "1s".into();
        c.local_model.endpoint = endpoint;
        c.local_model.max_retries = 0;
        c.local_model.max_tokens = 48;
        c.local_model.timeout = "120s".into();
        c.local_model.classify_timeout = "60s".into();
        for agent in [
            &mut c.agents.claude,
            &mut c.agents.codex,
            &mut c.agents.gemini,
        ] {
            agent.command = "/nonexistent/agent-cli".into();
        }
        adjust(c);
    })
    .await
}

/// `gemini` "installed" as `/bin/true`: a second agent that can start, so
/// `auto` tasks have a choice to make.
fn with_fake_gemini(c: &mut Config) {
    c.agents.gemini.command = "/bin/true".into();
}

fn local_spec(instructions: &str) -> pb::TaskSpec {
    agent_spec(pb::AgentType::Local, instructions)
}

/// Every event of an execution's log.
async fn log_of(client: &mut Client, execution_id: &str) -> Vec<pb::LogEvent> {
    let mut stream = client
        .stream_logs(pb::StreamLogsRequest {
            execution_id: execution_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        events.push(item.unwrap().event.unwrap());
    }
    events
}

fn of_kind(events: &[pb::LogEvent], kind: pb::LogEventKind) -> Vec<&pb::LogEvent> {
    events.iter().filter(|e| e.kind == kind as i32).collect()
}

/// The text of the log's Text events, put back together.
fn streamed_text(events: &[pb::LogEvent]) -> String {
    of_kind(events, pb::LogEventKind::Text)
        .iter()
        .map(|e| {
            let payload: serde_json::Value = serde_json::from_str(&e.payload_json).unwrap();
            payload["text"].as_str().unwrap().to_string()
        })
        .collect()
}

/// The task's last execution, once it has ended (a cancelled task may be
/// CANCELLED a moment before its attempt is recorded); 30 s at most.
async fn last_execution(client: &mut Client, task_id: &str) -> pb::Execution {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let run = executions(client, task_id).await.pop();
        if let Some(run) = run.filter(|r| r.ended_at.is_some()) {
            return run;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task {task_id} has no ended execution"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_local_task_streams_its_answer_into_the_log_and_records_tokens_at_no_cost() {
    let answer = "Line one of the answer.\nLine two.\n\n## Summary\nAnswered in two lines.";
    let mock = ChatMock::always(Reply::text(answer));
    let server = start(&mock.endpoint(), |_| {}).await;
    let mut client = server.client().await;
    let task = submit(&mut client, local_spec("Answer in two lines.")).await;
    let task = wait_completed(&mut client, &task.id).await;
    assert_eq!(task.summary, "Answered in two lines.");

    let run = last_execution(&mut client, &task.id).await;
    assert_eq!(run.agent, pb::AgentType::Local as i32);
    assert_eq!(run.agent_choice, pb::AgentChoice::Named as i32);
    assert_eq!(run.input_tokens, PROMPT_TOKENS);
    assert_eq!(
        run.output_tokens,
        answer.split_inclusive(' ').count() as u64
    );
    assert_eq!(run.cost_usd, 0.0);
    assert!(!run.cost_estimated);
    assert_eq!(run.summary, "Answered in two lines.");
    assert!(run.changed_files.is_empty() && run.commits.is_empty());

    let events = log_of(&mut client, &run.id).await;
    assert_eq!(streamed_text(&events), answer);
    let results = of_kind(&events, pb::LogEventKind::Result);
    assert_eq!(results.len(), 1);
    let result: serde_json::Value = serde_json::from_str(&results[0].payload_json).unwrap();
    assert_eq!(result["result"], answer);
    assert_eq!(result["usage"], "reported");

    let sent = &mock.requests()[0];
    assert_eq!(sent.body["stream"], true);
    assert_eq!(sent.body["max_tokens"], 48);
    assert!(sent.prompt().contains("Answer in two lines."));
    assert!(
        sent.prompt().contains("## Summary"),
        "the model is asked for one"
    );
}

#[tokio::test]
async fn a_local_task_against_the_real_model_completes_with_tokens_at_no_cost() {
    let _turn = common::real_model_turn().await;
    let server = start(&common::local_llm_endpoint(), |_| {}).await;
    let mut client = server.client().await;
    let task = submit(
        &mut client,
        local_spec("Say hello to the team in one sentence."),
    )
    .await;
    let task = wait_completed(&mut client, &task.id).await;
    let run = last_execution(&mut client, &task.id).await;
    assert_eq!(run.agent, pb::AgentType::Local as i32);
    assert!(run.output_tokens > 0 && run.output_tokens <= 48, "{run:?}");
    assert!(
        run.input_tokens > 0,
        "estimated when the server does not report it"
    );
    assert_eq!(run.cost_usd, 0.0);
    let events = log_of(&mut client, &run.id).await;
    assert!(!streamed_text(&events).is_empty());
    assert_eq!(of_kind(&events, pb::LogEventKind::Result).len(), 1);

    // doctor's view: the endpoint is reachable.
    let status = client
        .get_system_status(pb::GetSystemStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let local = status.local_model.unwrap();
    assert!(local.ok, "{}", local.detail);
}

#[tokio::test]
async fn cancelling_a_local_task_mid_stream_stops_the_request() {
    let mock = ChatMock::always(Reply::Slow {
        text: "word ".repeat(400),
        delay: Duration::from_millis(100),
    });
    let server = start(&mock.endpoint(), |_| {}).await;
    let mut client = server.client().await;
    let task = submit(&mut client, local_spec("Talk for a long time.")).await;

    // Follow the log until streamed text shows up, then cancel.
    let mut stream = client
        .stream_logs(pb::StreamLogsRequest {
            task_id: task.id.clone(),
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(item) = stream.next().await {
        if item.unwrap().event.unwrap().kind == pb::LogEventKind::Text as i32 {
            break;
        }
    }
    client
        .cancel_task(pb::CancelTaskRequest {
            id: task.id.clone(),
            reason: "enough".into(),
        })
        .await
        .unwrap();
    let task = wait_for(&mut client, &task.id, ENDED).await;
    assert_eq!(task.state, pb::TaskState::Cancelled as i32);
    assert!(
        mock.eventually(Duration::from_secs(30), |m| m.streams_aborted() == 1)
            .await,
        "the model is still streaming"
    );
    assert_eq!(mock.streams_completed(), 0);
    let run = last_execution(&mut client, &task.id).await;
    assert_eq!(run.state, pb::ExecutionState::Cancelled as i32);
    assert!(run.output_tokens > 0, "the deltas received are counted");
    assert!(run.output_tokens < 400);
}

#[tokio::test]
async fn a_local_task_past_its_timeout_is_stopped() {
    let mock = ChatMock::always(Reply::Slow {
        text: "word ".repeat(400),
        delay: Duration::from_millis(100),
    });
    let server = start(&mock.endpoint(), |_| {}).await;
    let mut client = server.client().await;
    let task = submit(
        &mut client,
        pb::TaskSpec {
            timeout: "2s".into(),
            ..local_spec("Talk for a long time.")
        },
    )
    .await;
    let task = wait_for(&mut client, &task.id, ENDED).await;
    assert_eq!(
        task.state,
        pb::TaskState::TimedOut as i32,
        "{}",
        task.state_reason
    );
    assert!(
        mock.eventually(Duration::from_secs(30), |m| m.streams_aborted() == 1)
            .await
    );
}

#[tokio::test]
async fn a_broken_model_fails_the_task_with_the_reason() {
    let cases = [
        (Reply::Empty, "empty answer"),
        (Reply::Malformed, "unreadable stream chunk"),
        (Reply::Truncated, "before the answer was complete"),
        (Reply::status(400, None), "answered 400"),
        (Reply::status(429, Some("1")), "rate limited"),
    ];
    for (reply, why) in cases {
        let label = format!("{reply:?}");
        let mock = ChatMock::always(reply);
        let server = start(&mock.endpoint(), |_| {}).await;
        let mut client = server.client().await;
        let task = submit(
            &mut client,
            pb::TaskSpec {
                max_attempts: 1,
                ..local_spec("Answer.")
            },
        )
        .await;
        let task = wait_for(&mut client, &task.id, ENDED).await;
        assert_eq!(task.state, pb::TaskState::Failed as i32, "{label}");
        assert!(
            task.state_reason.contains(why),
            "{label}: {}",
            task.state_reason
        );
    }
}

#[tokio::test]
async fn without_a_reachable_model_local_tasks_fail_at_once_and_doctor_says_why() {
    // No endpoint at all.
    let server = start("", |_| {}).await;
    let mut client = server.client().await;
    let task = submit(&mut client, local_spec("Answer.")).await;
    let task = wait_for(&mut client, &task.id, ENDED).await;
    assert_eq!(task.state, pb::TaskState::Failed as i32);
    assert!(
        task.state_reason.contains("[local_model]"),
        "{}",
        task.state_reason
    );
    let status = client
        .get_system_status(pb::GetSystemStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let local = status.local_model.unwrap();
    assert!(!local.ok);
    assert!(local.detail.contains("no local model"), "{}", local.detail);
    let agent = status
        .agents
        .iter()
        .find(|a| a.agent == pb::AgentType::Local as i32)
        .expect("the local agent is listed");
    assert!(!agent.available);

    // An endpoint nobody answers on: configured, not reachable.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let server = start(&format!("http://127.0.0.1:{port}/v1"), |_| {}).await;
    let mut client = server.client().await;
    let status = client
        .get_system_status(pb::GetSystemStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let local = status.local_model.unwrap();
    assert!(!local.ok);
    assert!(local.detail.contains("not reachable"), "{}", local.detail);

    // The mock: reachable.
    let mock = ChatMock::always(Reply::text("hi"));
    let server = start(&mock.endpoint(), |_| {}).await;
    let mut client = server.client().await;
    let status = client
        .get_system_status(pb::GetSystemStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let local = status.local_model.unwrap();
    assert!(local.ok, "{}", local.detail);
    assert!(local.detail.contains("reachable"), "{}", local.detail);
}

#[tokio::test]
async fn an_auto_task_is_routed_by_the_model_and_the_choice_is_recorded() {
    let mock = ChatMock::start(
        vec![Reply::text(
            "{\"agent\": \"local\", \"model\": \"\", \"reason\": \"it needs no tools\"}",
        )],
        Reply::text("Done.\n\n## Summary\nAnswered."),
    );
    let server = start(&mock.endpoint(), with_fake_gemini).await;
    let mut client = server.client().await;
    let task = submit(&mut client, spec("Explain what a mutex is.")).await;
    let task = wait_completed(&mut client, &task.id).await;
    let run = last_execution(&mut client, &task.id).await;
    assert_eq!(run.agent, pb::AgentType::Local as i32);
    assert_eq!(run.agent_choice, pb::AgentChoice::Model as i32);
    assert_eq!(run.agent_choice_reason, "it needs no tools");
    let question = &mock.requests()[0];
    assert_eq!(question.body["response_format"]["type"], "json_object");
    assert!(
        question.prompt().contains("gemini: free"),
        "{}",
        question.prompt()
    );
    assert!(question.prompt().contains("claude: not installed"));
    let events = log_of(&mut client, &run.id).await;
    assert!(
        events
            .iter()
            .any(|e| e.text.starts_with("agent local chosen by the model")),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_rerouted_task_counts_under_the_agent_that_runs_it_for_cluster_limits() {
    // The rule claims gemini for the auto task; the model moves it to local,
    // which then streams for a long while.
    let mock = ChatMock::start(
        vec![
            Reply::text("{\"agent\": \"local\", \"model\": \"\", \"reason\": \"no tools needed\"}"),
            Reply::Slow {
                text: "slowly ".repeat(300),
                delay: Duration::from_millis(100),
            },
        ],
        Reply::text("A summary."),
    );
    let server = start(&mock.endpoint(), |c| {
        with_fake_gemini(c);
        c.agents.gemini.cluster_max_concurrent = 1;
        c.local_model.max_concurrent = 4;
    })
    .await;
    let mut client = server.client().await;
    let auto = submit(&mut client, spec("Explain what a mutex is.")).await;
    assert!(
        mock.eventually(Duration::from_secs(30), |m| m.chat_calls() == 2)
            .await,
        "the auto task streams from the model"
    );
    let run = executions(&mut client, &auto.id).await.pop().unwrap();
    assert_eq!(run.state(), pb::ExecutionState::Running);
    assert_eq!(run.agent, pb::AgentType::Local as i32);
    assert_eq!(run.agent_choice, pb::AgentChoice::Model as i32);

    // Gemini's only cluster-wide slot is free again: a gemini task runs now,
    // not after the local stream.
    let gemini = submit(&mut client, agent_spec(pb::AgentType::Gemini, "Run now.")).await;
    wait_for(&mut client, &gemini.id, ENDED).await;
    assert_eq!(
        common::get(&mut client, &auto.id).await.state,
        pb::TaskState::Running as i32,
        "the gemini task ran while the re-routed one still streamed"
    );
    assert_eq!(
        executions(&mut client, &gemini.id).await.len(),
        1,
        "the gemini task ran"
    );
    client
        .cancel_task(pb::CancelTaskRequest {
            id: auto.id.clone(),
            reason: "done looking".into(),
        })
        .await
        .unwrap();
    wait_for(&mut client, &auto.id, ENDED).await;
}

#[tokio::test]
async fn an_auto_task_whose_first_agent_is_full_in_the_cluster_runs_on_the_next() {
    // `gemini` is a CLI that works for a minute; the cluster runs one.
    let dir = tempfile::tempdir().unwrap();
    let busy_gemini = dir.path().join("gemini");
    std::fs::write(&busy_gemini, "#!/bin/sh\nsleep 60\n").unwrap();
    std::fs::set_permissions(
        &busy_gemini,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // The model would rather have gemini for the auto task.
    let mock = ChatMock::start(
        vec![Reply::text(
            "{\"agent\": \"gemini\", \"model\": \"\", \"reason\": \"it edits files\"}",
        )],
        Reply::text("Done.\n\n## Summary\nAnswered."),
    );
    let server = start(&mock.endpoint(), |c| {
        c.agents.gemini.command = busy_gemini.clone();
        c.agents.gemini.cluster_max_concurrent = 1;
        c.local_model.max_concurrent = 4;
    })
    .await;
    let mut client = server.client().await;
    let gemini = submit(
        &mut client,
        agent_spec(pb::AgentType::Gemini, "Work for a minute."),
    )
    .await;
    let started = std::time::Instant::now();
    while executions(&mut client, &gemini.id).await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "gemini never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Gemini has room on this server but not in the cluster: the rule's
    // first choice is passed over for the next, and the model's wish for
    // gemini is refused for the same reason.
    let auto = submit(&mut client, spec("Explain what a mutex is.")).await;
    let auto = wait_completed(&mut client, &auto.id).await;
    let run = last_execution(&mut client, &auto.id).await;
    assert_eq!(run.agent, pb::AgentType::Local as i32);
    assert_eq!(run.agent_choice, pb::AgentChoice::Rule as i32);
    assert!(
        run.agent_choice_reason
            .contains("no room left in the cluster"),
        "{}",
        run.agent_choice_reason
    );
    assert_eq!(
        common::get(&mut client, &gemini.id).await.state,
        pb::TaskState::Running as i32
    );
    client
        .cancel_task(pb::CancelTaskRequest {
            id: gemini.id.clone(),
            reason: "done looking".into(),
        })
        .await
        .unwrap();
    wait_for(&mut client, &gemini.id, ENDED).await;
}

#[tokio::test]
async fn an_auto_task_falls_back_to_the_rule_when_the_model_answers_garbage() {
    let mock = ChatMock::start(
        vec![Reply::text("I like turtles.")],
        Reply::text("A summary."),
    );
    let server = start(&mock.endpoint(), with_fake_gemini).await;
    let mut client = server.client().await;
    let task = submit(&mut client, spec("Explain what a mutex is.")).await;
    let task = wait_for(&mut client, &task.id, ENDED).await;
    let run = last_execution(&mut client, &task.id).await;
    // The rule: the first agent in preference order that can start.
    assert_eq!(run.agent, pb::AgentType::Gemini as i32);
    assert_eq!(run.agent_choice, pb::AgentChoice::Rule as i32);
    assert!(
        run.agent_choice_reason.contains("is not a JSON object"),
        "{}",
        run.agent_choice_reason
    );
}

#[tokio::test]
async fn an_auto_task_with_the_real_model_is_classified_or_falls_back_cleanly() {
    let _turn = common::real_model_turn().await;
    let server = start(&common::local_llm_endpoint(), with_fake_gemini).await;
    let mut client = server.client().await;
    let task = submit(
        &mut client,
        spec("Explain in two sentences what a mutex is. No code changes."),
    )
    .await;
    let task = wait_for(&mut client, &task.id, ENDED).await;
    let run = last_execution(&mut client, &task.id).await;
    assert!(
        [pb::AgentType::Gemini as i32, pb::AgentType::Local as i32].contains(&run.agent),
        "{run:?}"
    );
    assert!(
        [pb::AgentChoice::Model as i32, pb::AgentChoice::Rule as i32].contains(&run.agent_choice),
        "{run:?}"
    );
    assert!(!run.agent_choice_reason.is_empty());
    println!(
        "real model routed to {:?} by {:?}: {}",
        pb::AgentType::try_from(run.agent),
        pb::AgentChoice::try_from(run.agent_choice),
        run.agent_choice_reason
    );
}

#[tokio::test]
async fn a_hanging_classifier_holds_up_no_other_task() {
    // The first call (the auto task's question) never answers.
    let mock = ChatMock::start(vec![Reply::Hang], Reply::text("A summary."));
    let server = start(&mock.endpoint(), |c| {
        with_fake_gemini(c);
        c.local_model.timeout = "2s".into();
    })
    .await;
    let mut client = server.client().await;
    let auto = submit(&mut client, spec("Route me.")).await;
    assert!(
        mock.eventually(Duration::from_secs(30), |m| m.chat_calls() == 1)
            .await
    );
    // While the model thinks, another task is started and run to its end.
    let gemini = submit(&mut client, agent_spec(pb::AgentType::Gemini, "Run now.")).await;
    wait_for(&mut client, &gemini.id, ENDED).await;
    let still = common::get(&mut client, &auto.id).await;
    assert_eq!(still.state, pb::TaskState::Running as i32);
    assert!(
        executions(&mut client, &auto.id).await.is_empty(),
        "still choosing"
    );

    // Cancelling it while it is being classified stops it.
    client
        .cancel_task(pb::CancelTaskRequest {
            id: auto.id.clone(),
            reason: "changed my mind".into(),
        })
        .await
        .unwrap();
    let auto = wait_for(&mut client, &auto.id, ENDED).await;
    assert_eq!(auto.state, pb::TaskState::Cancelled as i32);
    let run = last_execution(&mut client, &auto.id).await;
    assert_eq!(run.agent_choice, pb::AgentChoice::Rule as i32);
    assert!(run.agent_choice_reason.contains("stopped while choosing"));
}

#[tokio::test]
async fn the_model_writes_the_summary_an_answer_lacks_and_its_failure_fails_nothing() {
    // The answer has no `## Summary`: the second call writes one.
    let mock = ChatMock::start(
        vec![
            Reply::text("Hello there, with no heading at all."),
            Reply::text("## Summary\nIt greeted the user."),
        ],
        Reply::status(500, None),
    );
    let server = start(&mock.endpoint(), |_| {}).await;
    let mut client = server.client().await;
    let task = submit(&mut client, local_spec("Greet me.")).await;
    let task = wait_completed(&mut client, &task.id).await;
    assert_eq!(task.summary, "It greeted the user.");
    let run = last_execution(&mut client, &task.id).await;
    assert_eq!(run.summary, "It greeted the user.");
    let summary_call = &mock.requests()[1];
    assert_eq!(summary_call.body["stream"], false);
    assert!(
        summary_call
            .prompt()
            .contains("Hello there, with no heading at all.")
    );
    let events = log_of(&mut client, &run.id).await;
    assert!(
        events
            .iter()
            .any(|e| e.text == "the local model wrote the summary")
    );

    // The summary call fails: the task still completes, with no summary.
    let mock = ChatMock::start(
        vec![Reply::text("Hello again, no heading.")],
        Reply::status(500, None),
    );
    let server = start(&mock.endpoint(), |_| {}).await;
    let mut client = server.client().await;
    let task = submit(&mut client, local_spec("Greet me.")).await;
    let task = wait_completed(&mut client, &task.id).await;
    assert_eq!(task.summary, "");
    let run = last_execution(&mut client, &task.id).await;
    let events = log_of(&mut client, &run.id).await;
    assert!(
        events.iter().any(|e| e
            .text
            .starts_with("no summary: the local model could not write one")),
        "{events:?}"
    );
}
