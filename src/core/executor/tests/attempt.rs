//! One attempt with a scripted runner: what the task and the execution end
//! up as, what the runner was asked, and what is set aside.

use std::time::Duration;

use crate::core::executor::SYSTEM_PROMPT;
use crate::core::executor::testing::Harness;
use crate::core::model::{AgentType, ExecutionState, TaskState, now_millis};
use crate::core::runner::FakeStep;

use AgentType::{Claude, Codex};

#[tokio::test]
async fn a_successful_attempt_commits_delivers_and_keeps_the_summary() {
    let h = Harness::start(&[Claude], |_| {}).await;
    h.fake(Claude)
        .push([FakeStep::write_file("hello.txt", "hi\n")]);
    let task = h.submit(Claude, |_| {}).await;
    let done = h.wait_for(&task, TaskState::Completed).await;
    assert_eq!(done.summary, "Wrote hello.txt.");
    let executions = h.executions(&task).await;
    assert_eq!(executions.len(), 1);
    let execution = &executions[0];
    assert_eq!(execution.state, ExecutionState::Succeeded);
    assert_eq!(execution.changed_files, ["hello.txt"]);
    assert_eq!(execution.commits.len(), 1);
    assert_eq!(execution.session_id, "fake-claude-1");
    let requests = h.fake(Claude).requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].prompt, "do the thing");
    assert_eq!(requests[0].system_prompt, SYSTEM_PROMPT);
    assert_eq!(requests[0].resume_session, None);
    assert!(
        !h.sandbox_of(&task).exists(),
        "the sandbox of finished work is removed"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_rate_limited_attempt_is_requeued_with_a_backoff_and_sets_the_agent_aside() {
    let h = Harness::start(&[Claude], |_| {}).await;
    let retry_after = Duration::from_secs(2 * 3600);
    h.fake(Claude)
        .push([FakeStep::RateLimited(Some(retry_after))]);
    let before = now_millis();
    let task = h.submit(Claude, |_| {}).await;
    h.fake(Claude).wait_for_calls(1).await;
    let queued = h.wait_for(&task, TaskState::Queued).await;
    // The longer retry-after wins over the one-minute backoff.
    assert!(queued.run_after >= before + retry_after.as_millis() as i64);
    assert!(
        queued.state_reason.starts_with("rate limited"),
        "{}",
        queued.state_reason
    );
    assert_eq!(queued.attempts, 1);
    let executions = h.executions(&task).await;
    assert_eq!(executions[0].state, ExecutionState::RateLimited);
    let until = h
        .tasks
        .activity()
        .limited_until(Claude)
        .expect("claude set aside");
    assert!(until >= before + retry_after.as_millis() as i64);
    h.stop().await;
}

#[tokio::test]
async fn a_spent_quota_waits_for_its_reset_and_an_auto_task_moves_to_another_agent() {
    let h = Harness::start(&[Claude, Codex], |_| {}).await;
    let resets_at = now_millis() + 3 * 3600 * 1000;
    h.fake(Claude).push([
        FakeStep::UsageLimited(Some(resets_at)),
        FakeStep::UsageLimited(Some(resets_at)),
    ]);
    // A task that named claude waits for the reset.
    let named = h.submit(Claude, |_| {}).await;
    h.fake(Claude).wait_for_calls(1).await;
    let queued = h.wait_for(&named, TaskState::Queued).await;
    assert!(
        (resets_at - 1000..=resets_at + 1000).contains(&queued.run_after),
        "run_after {} for a reset at {resets_at}",
        queued.run_after
    );
    assert!(queued.state_reason.contains("claude set aside until"));
    let until = h
        .tasks
        .activity()
        .limited_until(Claude)
        .expect("claude set aside");
    assert!((resets_at - 1000..=resets_at + 1000).contains(&until));
    // An `auto` task goes to the next agent in preference order at once.
    let auto = h.submit(AgentType::Auto, |_| {}).await;
    h.wait_for(&auto, TaskState::Completed).await;
    let executions = h.executions(&auto).await;
    assert_eq!(executions.len(), 1);
    assert_eq!(executions[0].agent, Codex);
    assert_eq!(
        h.fake(Claude).requests().len(),
        1,
        "claude was not asked again"
    );
    h.stop().await;
}

#[tokio::test]
async fn an_agent_that_runs_past_the_timeout_is_stopped_and_the_task_timed_out() {
    let h = Harness::start(&[Claude], |_| {}).await;
    h.fake(Claude).push([FakeStep::Hang]);
    let task = h.submit(Claude, |spec| spec.timeout = "1s".into()).await;
    let timed_out = h.wait_for(&task, TaskState::TimedOut).await;
    assert_eq!(timed_out.state_reason, "timed out after 1s");
    assert_eq!(h.executions(&task).await[0].state, ExecutionState::TimedOut);
    h.stop().await;
}

#[tokio::test]
async fn a_cancel_mid_run_stops_the_agent() {
    let h = Harness::start(&[Claude], |_| {}).await;
    h.fake(Claude).push([FakeStep::Hang]);
    let task = h.submit(Claude, |_| {}).await;
    h.fake(Claude).wait_for_calls(1).await;
    h.tasks
        .cancel(&task.id.to_string(), "changed my mind")
        .await
        .unwrap();
    h.wait_for(&task, TaskState::Cancelled).await;
    // The hung agent returns once stopped, and the attempt is recorded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while h.executions(&task).await[0].state == ExecutionState::Running {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the attempt never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        h.executions(&task).await[0].state,
        ExecutionState::Cancelled
    );
    h.stop().await;
}

#[tokio::test]
async fn a_spent_budget_ends_the_task() {
    let h = Harness::start(&[Claude], |_| {}).await;
    h.fake(Claude)
        .push([FakeStep::BudgetExceeded("spent $2.00 of $1.00".into())]);
    let task = h.submit(Claude, |_| {}).await;
    let ended = h.wait_for(&task, TaskState::BudgetExceeded).await;
    assert_eq!(ended.state_reason, "spent $2.00 of $1.00");
    assert_eq!(
        h.executions(&task).await[0].state,
        ExecutionState::BudgetExceeded
    );
    h.stop().await;
}

#[tokio::test]
async fn a_question_blocks_the_task_and_the_answer_resumes_the_same_session() {
    let h = Harness::start(&[Claude], |_| {}).await;
    h.fake(Claude).push([
        FakeStep::ask("sqlite or postgres?"),
        FakeStep::write_file("db.txt", "sqlite\n"),
    ]);
    let task = h.submit(Claude, |_| {}).await;
    let blocked = h.wait_for(&task, TaskState::Blocked).await;
    assert_eq!(
        blocked.question.as_ref().map(|q| q.text.as_str()),
        Some("sqlite or postgres?")
    );
    assert_eq!(h.executions(&task).await[0].state, ExecutionState::Blocked);

    h.tasks
        .answer(&task.id.to_string(), "sqlite")
        .await
        .unwrap();
    h.wait_for(&task, TaskState::Completed).await;
    let requests = h.fake(Claude).requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].resume_session.as_deref(), Some("fake-claude-1"));
    assert_eq!(
        requests[1].prompt,
        "A person answered your question:\n\nsqlite"
    );
    // The question file was taken out before the commit.
    let executions = h.executions(&task).await;
    assert_eq!(executions[0].changed_files, Vec::<String>::new());
    assert_eq!(executions[1].changed_files, ["db.txt"]);
    h.stop().await;
}

/// The resume with the answer fails (the session is gone): the next
/// attempt still carries the answer, after the instructions.
#[tokio::test]
async fn an_answer_survives_a_failed_resume() {
    let h = Harness::start(&[Claude], |_| {}).await;
    h.fake(Claude).push([
        FakeStep::ask("sqlite or postgres?"),
        FakeStep::Fail("no conversation found with session id".into()),
        FakeStep::succeed(),
    ]);
    let task = h.submit(Claude, |_| {}).await;
    h.wait_for(&task, TaskState::Blocked).await;
    h.tasks
        .answer(&task.id.to_string(), "sqlite")
        .await
        .unwrap();
    h.wait_for(&task, TaskState::Completed).await;
    let requests = h.fake(Claude).requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(
        requests[1].prompt,
        "A person answered your question:\n\nsqlite"
    );
    assert!(
        requests[2]
            .prompt
            .ends_with("A person answered your question:\n\nsqlite"),
        "the answer reaches the next attempt: {}",
        requests[2].prompt
    );
    h.stop().await;
}

#[tokio::test]
async fn work_that_needs_review_waits_in_ready_with_its_sandbox() {
    let h = Harness::start(&[Claude], |_| {}).await;
    h.fake(Claude)
        .push([FakeStep::write_file("hello.txt", "hi\n")]);
    let task = h.submit(Claude, |spec| spec.review_required = true).await;
    let ready = h.wait_for(&task, TaskState::Ready).await;
    assert_eq!(ready.state_reason, "waiting for review");
    let execution = h.tasks.store().latest_execution(task.id).await.unwrap();
    assert_eq!(execution.unwrap().state, ExecutionState::Succeeded);
    assert!(
        h.sandbox_of(&task).join("hello.txt").is_file(),
        "the sandbox is kept"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_shutdown_mid_run_requeues_the_task() {
    let h = Harness::start(&[Claude], |_| {}).await;
    h.fake(Claude).push([FakeStep::Hang]);
    let task = h.submit(Claude, |_| {}).await;
    h.fake(Claude).wait_for_calls(1).await;
    let tasks = h.tasks.clone();
    h.stop().await;
    let requeued = tasks.get(&task.id.to_string()).await.unwrap();
    assert_eq!(requeued.state, TaskState::Queued);
    assert_eq!(
        requeued.state_reason,
        "the server shut down mid-run; requeued"
    );
    let execution = tasks.store().latest_execution(task.id).await.unwrap();
    assert_eq!(execution.unwrap().state, ExecutionState::Interrupted);
}

/// The text of an execution's log.
fn log_text(execution: &crate::core::model::Execution) -> String {
    std::fs::read_to_string(&execution.log_path)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|e| e["text"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn the_log_says_what_this_attempt_committed_or_that_nothing_changed() {
    let h = Harness::start(&[Claude], |_| {}).await;
    h.fake(Claude).push([
        FakeStep::write_file("hello.txt", "hi\n"),
        FakeStep::succeed(),
    ]);
    let task = h.submit(Claude, |spec| spec.review_required = true).await;
    h.wait_for(&task, TaskState::Ready).await;
    h.tasks
        .reject(&task.id.to_string(), "say hello louder")
        .await
        .unwrap();
    h.wait_for(&task, TaskState::Ready).await;
    let executions = h.executions(&task).await;
    let first = log_text(&executions[0]);
    let commit = &executions[0].commits[0];
    assert!(
        first.contains(&format!("committed on claudomator/{}: {commit}", task.id)),
        "{first}"
    );
    // The second attempt changed nothing: it does not claim the first's commit.
    let second = log_text(&executions[1]);
    assert!(
        second.contains("this attempt changed nothing") && !second.contains("committed on"),
        "{second}"
    );
    h.stop().await;

    let h = Harness::start(&[Claude], |_| {}).await;
    h.fake(Claude).push([FakeStep::succeed()]);
    let task = h.submit(Claude, |_| {}).await;
    h.wait_for(&task, TaskState::Completed).await;
    let log = log_text(&h.executions(&task).await[0]);
    assert!(log.contains("the agent changed nothing"), "{log}");
    h.stop().await;
}
