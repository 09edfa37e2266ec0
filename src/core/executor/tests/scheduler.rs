//! What starts when: dependencies, limits, priority order, agents missing.

use crate::core::executor::testing::Harness;
use crate::core::model::{AgentType, TaskState};
use crate::core::runner::FakeStep;

use AgentType::{Claude, Codex, Gemini};

#[test]
fn auto_prefers_among_every_agent_but_auto() {
    for &agent in AgentType::ALL {
        assert_eq!(
            crate::core::executor::AUTO_ORDER.contains(&agent),
            agent != AgentType::Auto,
            "{agent} in AUTO_ORDER"
        );
    }
}

#[tokio::test]
async fn a_failing_dependency_fails_its_dependent_and_a_completed_one_releases_it() {
    let h = Harness::start(&[Claude], |_| {}).await;
    h.fake(Claude).push([FakeStep::Fail("boom".into())]);
    let failing = h.submit(Claude, |s| s.max_attempts = 1).await;
    h.wait_for(&failing, TaskState::Failed).await;
    let dependent = h
        .submit(Claude, |s| s.depends_on = vec![failing.id.to_string()])
        .await;
    let failed = h.wait_for(&dependent, TaskState::Failed).await;
    assert_eq!(
        failed.state_reason,
        format!("dependency {} ended failed", failing.id)
    );
    assert!(h.executions(&dependent).await.is_empty(), "it never ran");

    let first = h.submit(Claude, |_| {}).await;
    let second = h
        .submit(Claude, |s| s.depends_on = vec![first.id.to_string()])
        .await;
    h.wait_for(&second, TaskState::Completed).await;
    let first = h.task(&first).await;
    assert_eq!(first.state, TaskState::Completed);
    assert!(
        h.executions(&second).await[0].started_at >= first.updated_at,
        "the dependent started after its dependency completed"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_task_for_an_agent_no_server_runs_fails_at_once() {
    let h = Harness::start(&[Claude], |_| {}).await;
    let task = h.submit(Codex, |_| {}).await;
    let failed = h.wait_for(&task, TaskState::Failed).await;
    assert_eq!(
        failed.state_reason,
        "agent `codex` is not available on this server"
    );
    h.fake(Claude).set_unavailable(Some("not installed"));
    let task = h.submit(Claude, |_| {}).await;
    let failed = h.wait_for(&task, TaskState::Failed).await;
    assert_eq!(failed.state_reason, "not installed");
    h.stop().await;
}

#[tokio::test]
async fn within_an_agents_limit_tasks_start_by_priority_then_age() {
    let h = Harness::start(&[Claude, Gemini], |c| {
        c.agent_limits.insert(Claude, 1);
    })
    .await;
    h.fake(Claude).push([FakeStep::Hang]);
    let busy = h.submit(Claude, |s| s.instructions = "busy".into()).await;
    h.fake(Claude).wait_for_calls(1).await;
    let mut waiting = Vec::new();
    for (name, priority) in [
        ("low", "low"),
        ("normal 1", "normal"),
        ("high", "high"),
        ("normal 2", "normal"),
    ] {
        let task = h
            .submit(Claude, |s| {
                s.instructions = name.into();
                s.priority = priority.into();
            })
            .await;
        waiting.push(task);
    }
    // A gemini task passes them all: the scheduler has looked at the queue
    // since they were submitted, and claude's limit kept them there.
    let other = h.submit(Gemini, |_| {}).await;
    h.wait_for(&other, TaskState::Completed).await;
    for task in &waiting {
        assert_eq!(h.task(task).await.state, TaskState::Queued);
    }
    assert_eq!(h.fake(Claude).requests().len(), 1, "one claude at a time");

    h.tasks
        .cancel(&busy.id.to_string(), "make room")
        .await
        .unwrap();
    for task in &waiting {
        h.wait_for(task, TaskState::Completed).await;
    }
    let order: Vec<String> = h
        .fake(Claude)
        .requests()
        .into_iter()
        .map(|r| r.prompt)
        .collect();
    assert_eq!(order, ["busy", "high", "normal 1", "normal 2", "low"]);
    h.stop().await;
}

/// Submits `n` tasks for `agent` at once (through the batching writer).
async fn submit_many(h: &Harness, agent: AgentType, n: usize) {
    let mut submits = tokio::task::JoinSet::new();
    for i in 0..n {
        let tasks = h.tasks.clone();
        let request = crate::core::model::SubmitRequest {
            spec: crate::core::model::TaskSpec {
                name: format!("backlog {i}"),
                instructions: format!("backlog {i}"),
                project: "p".into(),
                agent: crate::core::model::AgentSpec {
                    agent_type: agent.as_str().into(),
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        };
        submits.spawn(async move { tasks.submit(request).await.unwrap() });
    }
    while let Some(submitted) = submits.join_next().await {
        submitted.unwrap();
    }
}

#[tokio::test]
async fn a_backlog_of_one_agent_at_its_limit_does_not_starve_another() {
    let h = Harness::start(&[Claude, Gemini], |c| {
        c.agent_limits.insert(Claude, 1);
    })
    .await;
    h.fake(Claude).push([FakeStep::Hang]);
    let busy = h.submit(Claude, |_| {}).await;
    h.fake(Claude).wait_for_calls(1).await;
    // 300 claude tasks queue behind it, older than the gemini task and of
    // the same priority: all ahead of it in priority-then-age order.
    submit_many(&h, Claude, 300).await;
    let gemini = h.submit(Gemini, |_| {}).await;
    h.wait_for(&gemini, TaskState::Completed).await;
    assert_eq!(h.task(&busy).await.state, TaskState::Running);
    assert_eq!(
        h.fake(Claude).requests().len(),
        1,
        "claude stayed at its limit"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_backlog_of_one_agent_at_its_cluster_cap_does_not_starve_another() {
    // The cap is the cluster's (all servers on the database), not this
    // server's: claims of claude tasks would all be refused by the store.
    let h = Harness::start(&[Claude, Gemini], |c| {
        c.cluster_limits.insert(Claude, 1);
    })
    .await;
    h.fake(Claude).push([FakeStep::Hang]);
    let busy = h.submit(Claude, |_| {}).await;
    h.fake(Claude).wait_for_calls(1).await;
    submit_many(&h, Claude, 300).await;
    let gemini = h.submit(Gemini, |_| {}).await;
    h.wait_for(&gemini, TaskState::Completed).await;
    assert_eq!(h.task(&busy).await.state, TaskState::Running);
    assert_eq!(
        h.fake(Claude).requests().len(),
        1,
        "claude stayed at its cap"
    );
    h.stop().await;
}
