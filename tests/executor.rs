//! End to end: the real server runs the real `claude` CLI (installed by
//! scripts/install-agents) against the project's own scripted Anthropic
//! model server, in git sandboxes, and clients watch over gRPC.

mod common;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use claudomator::config::Config;
use claudomator::proto as pb;
use common::{
    TestServer, agent_spec, executions, get, processes_in, start_server_with, submit,
    wait_completed, wait_for,
};
use support::anthropic_mock::{AnthropicMock, Script};
use support::chat_mock::{ChatMock, Reply};
use support::claude_env::{claude_or_skip, configure_claude};
use tokio_stream::StreamExt;

/// A server whose `claude` agent talks to `mock`, with `adjust` applied.
async fn server_with_claude(
    mock: &AnthropicMock,
    home: &Path,
    adjust: impl FnOnce(&mut Config),
) -> TestServer {
    start_server_with(move |c| {
        configure_claude(c, &mock.base_url(), home, 1);
        c.executor.enabled = true;
        c.executor.poll_interval = "200ms".into();
        c.executor.retry_base = "1s".into();
        adjust(c);
    })
    .await
}

fn claude_spec(instructions: &str) -> pb::TaskSpec {
    agent_spec(pb::AgentType::Claude, instructions)
}

/// Polls `condition` without blocking the runtime (30 s at most).
async fn eventually(condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

async fn git_output(dir: &Path, args: &[&str]) -> String {
    let out = tokio::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn a_task_runs_claude_in_a_sandbox_and_records_everything() {
    if claude_or_skip("a_task_runs_claude_in_a_sandbox_and_records_everything").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let mock = AnthropicMock::start(Script::write_file("hello.txt", "hi"));
    let server = server_with_claude(&mock, home.path(), |_| {}).await;
    let mut client = server.client().await;

    let task = submit(&mut client, claude_spec("Create hello.txt containing hi")).await;
    let done = wait_completed(&mut client, &task.id).await;
    assert_eq!(done.attempts, 1);

    let runs = executions(&mut client, &task.id).await;
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(
        run.state,
        pb::ExecutionState::Succeeded as i32,
        "{}",
        run.error
    );
    assert_eq!(run.agent, pb::AgentType::Claude as i32);
    assert_eq!(run.model, "claude-sonnet-4-5");
    assert!(!run.session_id.is_empty());
    assert!(run.cost_usd > 0.0);
    assert!(run.input_tokens > 0 && run.output_tokens > 0);
    assert!(run.turns >= 2);
    assert_eq!(run.exit_code, Some(0));
    assert!(
        !run.summary.is_empty(),
        "the ## Summary section is extracted"
    );
    assert_eq!(done.summary, run.summary);
    assert_eq!(run.changed_files, vec!["hello.txt".to_string()]);
    assert_eq!(run.file_changes[0].added, 1);
    assert_eq!(run.commits.len(), 1);

    // The commit is delivered to the project as branch claudomator/<task>.
    let project = server.config.projects[0].path.clone();
    let branch = format!("claudomator/{}", task.id);
    assert_eq!(
        git_output(&project, &["rev-parse", &branch]).await,
        run.commits[0]
    );
    assert_eq!(
        git_output(&project, &["show", &format!("{branch}:hello.txt")]).await,
        "hi"
    );
    // The project's own checkout is untouched, and the sandbox is gone.
    assert!(!project.join("hello.txt").exists());
    assert!(!server.data_dir().join("sandboxes").join(&task.id).exists());

    // The log is on disk and replays in full over StreamLogs.
    assert!(Path::new(&run.log_path).is_file());
    let mut stream = client
        .stream_logs(pb::StreamLogsRequest {
            execution_id: run.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut kinds = Vec::new();
    let mut next = 0;
    while let Some(item) = stream.next().await {
        let event = item.unwrap().event.unwrap();
        assert_eq!(event.offset, next);
        next += 1;
        kinds.push(pb::LogEventKind::try_from(event.kind).unwrap());
    }
    for wanted in [
        pb::LogEventKind::System,
        pb::LogEventKind::ToolCall,
        pb::LogEventKind::ToolResult,
        pb::LogEventKind::Text,
        pb::LogEventKind::Result,
    ] {
        assert!(kinds.contains(&wanted), "{wanted:?} missing from {kinds:?}");
    }
}

#[tokio::test]
async fn limits_map_to_states() {
    if claude_or_skip("limits_map_to_states").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let mock = AnthropicMock::start(Script::ManyTurns);
    let server = server_with_claude(&mock, home.path(), |_| {}).await;
    let mut client = server.client().await;

    let mut turns = claude_spec("keep going");
    turns.agent.as_mut().unwrap().max_turns = 1;
    let turns = submit(&mut client, turns).await;
    let mut budget = claude_spec("spend");
    budget.agent.as_mut().unwrap().max_budget_usd = 0.0001;
    let budget = submit(&mut client, budget).await;

    let finals = [
        pb::TaskState::Completed,
        pb::TaskState::Failed,
        pb::TaskState::BudgetExceeded,
    ];
    let turns = wait_for(&mut client, &turns.id, &finals).await;
    assert_eq!(turns.state, pb::TaskState::Failed as i32);
    // `max_turns` 1 is one model turn taken (the real CLI reports the
    // refused second one in `num_turns`; the record does not).
    assert!(
        turns
            .state_reason
            .contains("turn limit: 1 model turn(s) taken"),
        "{}",
        turns.state_reason
    );
    assert_eq!(executions(&mut client, &turns.id).await[0].turns, 1);
    let budget = wait_for(&mut client, &budget.id, &finals).await;
    assert_eq!(
        budget.state,
        pb::TaskState::BudgetExceeded as i32,
        "{}",
        budget.state_reason
    );
    let run = &executions(&mut client, &budget.id).await[0];
    assert_eq!(run.state, pb::ExecutionState::BudgetExceeded as i32);
    // A failed attempt's sandbox is kept for inspection.
    assert!(server.data_dir().join("sandboxes").join(&turns.id).is_dir());
}

#[tokio::test]
async fn a_rate_limited_attempt_is_requeued_and_then_succeeds() {
    if claude_or_skip("a_rate_limited_attempt_is_requeued_and_then_succeeds").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    // CLAUDE_CODE_MAX_RETRIES=1: each attempt makes two calls, so the first
    // attempt is rate-limited and the second succeeds on its second call.
    let mock = AnthropicMock::start(Script::rate_limited_then(
        3,
        1,
        Script::write_file("ok.txt", "ok"),
    ));
    let server = server_with_claude(&mock, home.path(), |_| {}).await;
    let mut client = server.client().await;

    let task = submit(&mut client, claude_spec("write ok.txt")).await;
    let done = wait_completed(&mut client, &task.id).await;
    assert_eq!(done.attempts, 2);
    let runs = executions(&mut client, &task.id).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].state, pb::ExecutionState::RateLimited as i32);
    assert!(runs[0].error.contains("rate limited"), "{}", runs[0].error);
    assert_eq!(runs[1].state, pb::ExecutionState::Succeeded as i32);
    // The backoff was honoured: the retry started at least a second later.
    let gap = runs[1].started_at.unwrap().seconds - runs[0].ended_at.unwrap().seconds;
    assert!(gap >= 0, "{gap}");
    let gap_ms = (runs[1].started_at.unwrap().seconds * 1000
        + runs[1].started_at.unwrap().nanos as i64 / 1_000_000)
        - (runs[0].ended_at.unwrap().seconds * 1000
            + runs[0].ended_at.unwrap().nanos as i64 / 1_000_000);
    assert!(gap_ms >= 900, "retried after {gap_ms} ms");
}

#[tokio::test]
async fn cancel_and_timeout_end_the_agent_and_leave_no_process() {
    if claude_or_skip("cancel_and_timeout_end_the_agent_and_leave_no_process").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let mock = AnthropicMock::start(Script::Slow {
        delay_per_event: Duration::from_millis(200),
        chunks: 1000,
    });
    let server = server_with_claude(&mock, home.path(), |_| {}).await;
    let mut client = server.client().await;
    let sandboxes = server.data_dir().join("sandboxes");

    let cancelled = submit(&mut client, claude_spec("take your time")).await;
    let mut timed = claude_spec("take even longer");
    timed.timeout = "4s".into();
    let timed = submit(&mut client, timed).await;

    wait_for(&mut client, &cancelled.id, &[pb::TaskState::Running]).await;
    assert!(
        eventually(|| mock.in_flight() >= 1).await,
        "the agent reached the model"
    );
    assert!(
        !processes_in(&sandboxes).is_empty(),
        "the agent runs in its sandbox"
    );
    let response = client
        .cancel_task(pb::CancelTaskRequest {
            id: cancelled.id.clone(),
            reason: "changed my mind".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(response.state, pb::TaskState::Cancelled as i32);

    let timed = wait_for(
        &mut client,
        &timed.id,
        &[
            pb::TaskState::TimedOut,
            pb::TaskState::Failed,
            pb::TaskState::Completed,
        ],
    )
    .await;
    assert_eq!(
        timed.state,
        pb::TaskState::TimedOut as i32,
        "{}",
        timed.state_reason
    );

    // Both executions end, and no process is left in any sandbox.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = executions(&mut client, &cancelled.id).await;
        let b = executions(&mut client, &timed.id).await;
        let ended = |runs: &[pb::Execution]| runs.iter().all(|r| r.ended_at.is_some());
        if ended(&a) && ended(&b) {
            assert_eq!(a[0].state, pb::ExecutionState::Cancelled as i32);
            assert_eq!(b[0].state, pb::ExecutionState::TimedOut as i32);
            break;
        }
        assert!(Instant::now() < deadline, "executions did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = processes_in(&sandboxes);
    assert!(left.is_empty(), "processes outlived their task: {left:?}");
    assert_eq!(
        get(&mut client, &cancelled.id).await.state_reason,
        "changed my mind"
    );
}

/// A run that ends without the agent's result (cancelled, timed out)
/// keeps the tokens and turns its log carries, priced from the table:
/// never the 0 tokens and $0 of a run that did nothing.
#[tokio::test]
async fn cancelled_and_timed_out_runs_keep_the_usage_their_logs_carry() {
    if claude_or_skip("cancelled_and_timed_out_runs_keep_the_usage_their_logs_carry").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    // A tool call every turn, forever: usage in the log from the first one.
    let mock = AnthropicMock::start(Script::ManyTurns);
    let server = server_with_claude(&mock, home.path(), |c| {
        c.prices.insert(
            "claude-sonnet-4-5".into(),
            claudomator::runners::Price {
                input_per_mtok: 3.0,
                output_per_mtok: 15.0,
            },
        );
    })
    .await;
    let mut client = server.client().await;
    let cancelled = submit(&mut client, claude_spec("keep going")).await;
    // Long enough for a loaded machine to start the CLI and finish a turn.
    let mut timed = claude_spec("keep going until stopped");
    timed.timeout = "12s".into();
    let timed = submit(&mut client, timed).await;
    wait_for(&mut client, &cancelled.id, &[pb::TaskState::Running]).await;
    // The cancelled run's own log has a finished turn before the cancel
    // (its execution is listed a moment after the task is RUNNING).
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        if let Some(run) = executions(&mut client, &cancelled.id).await.pop() {
            break run;
        }
        assert!(Instant::now() < deadline, "no execution started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let turned = || {
        std::fs::read_to_string(&run.log_path)
            .is_ok_and(|log| log.matches("\"kind\":\"tool_result\"").count() >= 2)
    };
    assert!(eventually(turned).await, "turns went by");
    client
        .cancel_task(pb::CancelTaskRequest {
            id: cancelled.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap();
    for (task, state) in [
        (&cancelled, pb::ExecutionState::Cancelled),
        (&timed, pb::ExecutionState::TimedOut),
    ] {
        let deadline = Instant::now() + Duration::from_secs(30);
        let run = loop {
            let run = executions(&mut client, &task.id).await.remove(0);
            if run.ended_at.is_some() {
                break run;
            }
            assert!(Instant::now() < deadline, "the execution did not end");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(run.state, state as i32, "{}", run.error);
        assert!(run.input_tokens > 0 && run.output_tokens > 0, "{run:?}");
        assert!(run.turns >= 1, "{run:?}");
        assert!(
            run.cost_usd > 0.0 && run.cost_estimated && !run.cost_unknown,
            "{run:?}"
        );
    }
}

#[tokio::test]
async fn two_subscribers_follow_one_execution_live() {
    if claude_or_skip("two_subscribers_follow_one_execution_live").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let mock = AnthropicMock::start(Script::Slow {
        delay_per_event: Duration::from_millis(50),
        chunks: 40,
    });
    let server = server_with_claude(&mock, home.path(), |_| {}).await;
    let mut client = server.client().await;
    let task = submit(&mut client, claude_spec("narrate slowly")).await;

    // The first subscriber follows by task id before the execution exists.
    let mut early = client
        .stream_logs(pb::StreamLogsRequest {
            task_id: task.id.clone(),
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = early.next().await.unwrap().unwrap().event.unwrap();
    assert_eq!(first.offset, 0);

    // The second joins late from offset 1, while the agent still runs.
    assert_eq!(
        get(&mut client, &task.id).await.state,
        pb::TaskState::Running as i32
    );
    let mut late_client = server.client().await;
    let late = late_client
        .stream_logs(pb::StreamLogsRequest {
            execution_id: first.execution_id.clone(),
            from_offset: 1,
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let collect = |mut stream: tonic::Streaming<pb::StreamLogsResponse>| async move {
        let mut events = Vec::new();
        while let Some(item) = stream.next().await {
            events.push(item.unwrap().event.unwrap());
        }
        events
    };
    let (mut early_events, late_events) = tokio::join!(collect(early), collect(late));
    early_events.insert(0, first);

    let offsets = |events: &[pb::LogEvent]| events.iter().map(|e| e.offset).collect::<Vec<_>>();
    let total = early_events.len() as u64;
    assert!(total >= 4, "start, agent events, result, end: got {total}");
    assert_eq!(offsets(&early_events), (0..total).collect::<Vec<_>>());
    assert_eq!(offsets(&late_events), (1..total).collect::<Vec<_>>());
    assert_eq!(early_events[1..], late_events[..]);
    assert!(
        early_events
            .iter()
            .any(|e| e.kind == pb::LogEventKind::Result as i32),
        "the stream runs to the result"
    );
    let done = get(&mut client, &task.id).await;
    assert_eq!(
        done.state,
        pb::TaskState::Completed as i32,
        "{}",
        done.state_reason
    );
}

#[tokio::test]
async fn the_scheduler_keeps_limits_priorities_and_dependencies() {
    if claude_or_skip("the_scheduler_keeps_limits_priorities_and_dependencies").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let mock = AnthropicMock::start(Script::Slow {
        delay_per_event: Duration::from_millis(20),
        chunks: 10,
    });
    let server = server_with_claude(&mock, home.path(), |c| {
        c.executor.max_concurrent = 3;
        c.agents.claude.max_concurrent = 2;
    })
    .await;
    let mut client = server.client().await;

    let first = submit(&mut client, claude_spec("first")).await;
    let mut after = claude_spec("after first");
    after.depends_on = vec![first.id.clone()];
    let after = submit(&mut client, after).await;
    assert_eq!(after.state, pb::TaskState::Pending as i32);
    let mut batch = Vec::new();
    for (i, priority) in [
        pb::Priority::Low,
        pb::Priority::Normal,
        pb::Priority::High,
        pb::Priority::Low,
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = claude_spec(&format!("batch {i}"));
        s.priority = priority as i32;
        batch.push(submit(&mut client, s).await);
    }
    // A dependency that gets cancelled fails its dependent.
    let doomed = submit(
        &mut client,
        pb::TaskSpec {
            priority: pb::Priority::Low as i32,
            ..claude_spec("doomed")
        },
    )
    .await;
    let mut orphan = claude_spec("orphan");
    orphan.depends_on = vec![doomed.id.clone()];
    let orphan = submit(&mut client, orphan).await;
    client
        .cancel_task(pb::CancelTaskRequest {
            id: doomed.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap();

    let finals = [
        pb::TaskState::Completed,
        pb::TaskState::Failed,
        pb::TaskState::Cancelled,
    ];
    let orphan = wait_for(&mut client, &orphan.id, &finals).await;
    assert_eq!(orphan.state, pb::TaskState::Failed as i32);
    assert!(
        orphan.state_reason.contains(&doomed.id),
        "{}",
        orphan.state_reason
    );

    let mut started = Vec::new();
    for task in batch.iter().chain([&first, &after]) {
        let done = wait_for(&mut client, &task.id, &finals).await;
        assert_eq!(
            done.state,
            pb::TaskState::Completed as i32,
            "{}",
            done.state_reason
        );
        let run = executions(&mut client, &task.id).await.remove(0);
        started.push((
            task.id.clone(),
            run.started_at.unwrap(),
            run.ended_at.unwrap(),
        ));
    }
    // The per-agent cap (2) held at every moment, though the global cap is 3.
    assert!(
        mock.max_in_flight() <= 2,
        "max in flight {}",
        mock.max_in_flight()
    );
    // The dependent started only after its dependency ended.
    let first_end = &started[4].2;
    let after_start = &started[5].1;
    assert!(
        (after_start.seconds, after_start.nanos) >= (first_end.seconds, first_end.nanos),
        "dependent started before its dependency ended"
    );
    // Among the batch, high priority started no later than the low ones
    // submitted before it.
    let key = |t: &prost_types::Timestamp| (t.seconds, t.nanos);
    assert!(key(&started[2].1) <= key(&started[3].1));
}

#[tokio::test]
async fn a_spent_quota_sets_the_agent_aside_and_requeues() {
    if claude_or_skip("a_spent_quota_sets_the_agent_aside_and_requeues").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let mock = AnthropicMock::start(Script::UsageLimitReached);
    let server = server_with_claude(&mock, home.path(), |c| {
        c.executor.usage_limit_cooldown = "1h".into();
    })
    .await;
    let mut client = server.client().await;
    let task = submit(&mut client, claude_spec("anything")).await;

    // One attempt, then the task waits in the queue for the cool-down.
    let deadline = Instant::now() + Duration::from_secs(60);
    let runs = loop {
        let runs = executions(&mut client, &task.id).await;
        if runs.first().is_some_and(|r| r.ended_at.is_some()) {
            break runs;
        }
        assert!(Instant::now() < deadline, "the attempt did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(runs[0].state, pb::ExecutionState::RateLimited as i32);
    assert!(runs[0].error.contains("usage limit"), "{}", runs[0].error);
    let queued = wait_for(&mut client, &task.id, &[pb::TaskState::Queued]).await;
    assert!(
        queued.state_reason.contains("set aside until"),
        "{}",
        queued.state_reason
    );
    // A second task for the same agent is not started while it is set aside.
    let second = submit(&mut client, claude_spec("another")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        get(&mut client, &second.id).await.state,
        pb::TaskState::Queued as i32
    );
    assert_eq!(executions(&mut client, &task.id).await.len(), 1);
    assert!(executions(&mut client, &second.id).await.is_empty());
}

#[tokio::test]
async fn shutdown_requeues_running_tasks_and_stops_their_agents() {
    if claude_or_skip("shutdown_requeues_running_tasks_and_stops_their_agents").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let mock = AnthropicMock::start(Script::Slow {
        delay_per_event: Duration::from_millis(200),
        chunks: 1000,
    });
    let mut server = server_with_claude(&mock, home.path(), |_| {}).await;
    let mut client = server.client().await;
    let task = submit(&mut client, claude_spec("long job")).await;
    wait_for(&mut client, &task.id, &[pb::TaskState::Running]).await;
    assert!(eventually(|| mock.in_flight() >= 1).await);

    server.stop().await;
    let sandboxes = server.data_dir().join("sandboxes");
    let left = processes_in(&sandboxes);
    assert!(left.is_empty(), "agents outlived the server: {left:?}");

    let store = server.open_store().await;
    let id = task.id.parse().unwrap();
    let stored = store.get_task(id).await.unwrap().unwrap();
    assert_eq!(stored.state, claudomator::core::model::TaskState::Queued);
    let run = store.latest_execution(id).await.unwrap().unwrap();
    assert_eq!(
        run.state,
        claudomator::core::model::ExecutionState::Interrupted
    );
    assert!(run.ended_at.is_some());
    // The sandbox is kept for the next attempt.
    assert!(sandboxes.join(&task.id).is_dir());
}

#[tokio::test]
async fn finished_work_is_rebased_and_pushed_to_the_publish_remote() {
    if claude_or_skip("finished_work_is_rebased_and_pushed_to_the_publish_remote").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let bare = remote.path().join("demo.git");
    let mock = AnthropicMock::start(Script::write_file("feature.txt", "new"));
    let server = server_with_claude(&mock, home.path(), |c| {
        c.projects[0].publish_remote = Some("origin".into());
    })
    .await;
    let project = server.config.projects[0].path.clone();
    let git = |dir: &Path, args: &[&str]| {
        let status = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.com",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    git(
        remote.path(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "trunk",
            bare.to_str().unwrap(),
        ],
    );
    git(
        &project,
        &["remote", "add", "origin", bare.to_str().unwrap()],
    );
    git(&project, &["push", "-q", "origin", "trunk"]);

    let mut client = server.client().await;
    let task = submit(&mut client, claude_spec("add feature.txt")).await;
    let seen = wait_for(
        &mut client,
        &task.id,
        &[
            pb::TaskState::Running,
            pb::TaskState::Completed,
            pb::TaskState::Failed,
        ],
    )
    .await;
    // Move trunk on while the agent works: the branch must be rebased onto it.
    let moved_trunk = seen.state == pb::TaskState::Running as i32;
    if moved_trunk {
        std::fs::write(project.join("NEWS.md"), "news\n").unwrap();
        git(&project, &["add", "NEWS.md"]);
        git(&project, &["commit", "-q", "-m", "trunk moves on"]);
    }
    wait_completed(&mut client, &task.id).await;

    let branch = format!("claudomator/{}", task.id);
    let pushed = git_output(&bare, &["rev-parse", &branch]).await;
    assert_eq!(pushed.len(), 40, "the branch reached the publish remote");
    assert_eq!(
        git_output(&bare, &["show", &format!("{branch}:feature.txt")]).await,
        "new"
    );
    let trunk_head = git_output(&project, &["rev-parse", "trunk"]).await;
    let status = std::process::Command::new("git")
        .args(["merge-base", "--is-ancestor", &trunk_head, &pushed])
        .current_dir(&bare)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the pushed branch sits on the project's trunk (moved: {moved_trunk})"
    );
    let logged =
        std::fs::read_to_string(&executions(&mut client, &task.id).await[0].log_path).unwrap();
    assert!(logged.contains("pushed it to origin"), "{logged}");
}

#[tokio::test]
async fn system_status_says_what_will_work_and_missing_agents_fail_at_once() {
    if claude_or_skip("system_status_says_what_will_work_and_missing_agents_fail_at_once").is_none()
    {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let mock = AnthropicMock::start(Script::write_file("x.txt", "x"));
    let server = server_with_claude(&mock, home.path(), |c| {
        c.agents.gemini.command = "/nonexistent/gemini".into();
        c.agents.codex.command = "/nonexistent/codex".into();
        c.agents.claude.max_concurrent = 2;
    })
    .await;
    let mut client = server.client().await;
    let status = client
        .get_system_status(pb::GetSystemStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.executor_enabled);
    let agent = |a: pb::AgentType| {
        status
            .agents
            .iter()
            .find(|s| s.agent == a as i32)
            .unwrap()
            .clone()
    };
    let claude = agent(pb::AgentType::Claude);
    assert!(claude.available, "{}", claude.detail);
    assert!(claude.version.starts_with("2.1.197"), "{}", claude.version);
    assert!(claude.credentials_ok, "{}", claude.credentials);
    assert!(claude.credentials.contains("ANTHROPIC_API_KEY"));
    assert_eq!(claude.max_concurrent, 2);
    let gemini = agent(pb::AgentType::Gemini);
    assert!(!gemini.available);
    assert!(gemini.detail.contains("not installed"), "{}", gemini.detail);
    assert!(status.git.unwrap().ok);
    assert!(status.data_dir.unwrap().ok);
    assert!(status.database.unwrap().ok);

    // A task for an agent that is not installed fails at once, saying why.
    let mut for_gemini = claude_spec("needs gemini");
    for_gemini.agent.as_mut().unwrap().r#type = pb::AgentType::Gemini as i32;
    let task = submit(&mut client, for_gemini).await;
    let failed = wait_for(
        &mut client,
        &task.id,
        &[pb::TaskState::Failed, pb::TaskState::Completed],
    )
    .await;
    assert_eq!(failed.state, pb::TaskState::Failed as i32);
    assert!(
        failed.state_reason.contains("not installed"),
        "{}",
        failed.state_reason
    );
}

#[tokio::test]
async fn a_backlog_of_claude_at_its_limit_does_not_hold_back_a_local_task() {
    if claude_or_skip("a_backlog_of_claude_at_its_limit_does_not_hold_back_a_local_task").is_none()
    {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    // The one claude attempt allowed runs for minutes (until cancelled).
    let mock = AnthropicMock::start(Script::Slow {
        delay_per_event: Duration::from_secs(1),
        chunks: 600,
    });
    let model = ChatMock::start(Vec::new(), Reply::text("Done.\n\n## Summary\nAnswered."));
    let server = server_with_claude(&mock, home.path(), |c| {
        c.executor.max_concurrent = 4;
        c.agents.claude.max_concurrent = 1;
        c.local_model.endpoint = model.endpoint();
        c.local_model.max_retries = 0;
    })
    .await;
    let mut client = server.client().await;
    let busy = submit(&mut client, claude_spec("busy")).await;
    assert!(
        eventually(|| mock.in_flight() == 1).await,
        "claude never started"
    );
    // 300 claude tasks wait behind it, all older than the local task.
    for i in 0..300 {
        submit(&mut client, claude_spec(&format!("backlog {i}"))).await;
    }
    let local = submit(&mut client, agent_spec(pb::AgentType::Local, "Say hello.")).await;
    let local = wait_completed(&mut client, &local.id).await;
    assert_eq!(local.state, pb::TaskState::Completed as i32);
    assert_eq!(
        get(&mut client, &busy.id).await.state,
        pb::TaskState::Running as i32
    );
    assert_eq!(mock.max_in_flight(), 1, "claude stayed at its limit");
}

/// `SubmitTask` says when no live server can run the task's agent (still
/// accepting it), refuses it with `require_agent`, and counts an agent
/// another live server sharing the database announced.
#[tokio::test]
async fn submit_says_when_no_live_server_runs_the_agent_and_require_agent_refuses() {
    if claude_or_skip("submit_says_when_no_live_server_runs_the_agent_and_require_agent_refuses")
        .is_none()
    {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let mock = AnthropicMock::start(Script::write_file("x.txt", "x"));
    let server = server_with_claude(&mock, home.path(), |c| {
        c.agents.gemini.command = "/nonexistent/gemini".into();
    })
    .await;
    let mut client = server.client().await;
    let request = |agent: pb::AgentType, require_agent: bool| pb::SubmitTaskRequest {
        spec: Some(agent_spec(agent, "work")),
        require_agent,
        ..Default::default()
    };
    let refused = client
        .submit_task(request(pb::AgentType::Gemini, true))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let message = refused.message();
    assert!(
        message.starts_with("spec.agent.type: no live server can run agent gemini now")
            && message.contains("not installed"),
        "{message}"
    );
    assert!(
        common::all_tasks(&mut client).await.is_empty(),
        "nothing stored"
    );

    let accepted = client
        .submit_task(request(pb::AgentType::Gemini, false))
        .await
        .unwrap()
        .into_inner();
    assert!(accepted.created);
    assert!(
        accepted
            .agent_unavailable
            .contains("no live server can run agent gemini now"),
        "{}",
        accepted.agent_unavailable
    );
    let claude = client
        .submit_task(request(pb::AgentType::Claude, true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(claude.agent_unavailable, "");

    // Another live server that runs gemini: the agent is available.
    let store = server.open_store().await;
    store
        .announce_server(
            "elsewhere",
            Some(&[claudomator::core::model::AgentType::Gemini]),
            claudomator::core::model::now_millis(),
        )
        .await
        .unwrap();
    let elsewhere = client
        .submit_task(request(pb::AgentType::Gemini, true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(elsewhere.agent_unavailable, "");
}
