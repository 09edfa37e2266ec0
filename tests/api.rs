//! The v1 task API over real gRPC: submit, get, list, cancel, executions.

mod common;

use claudomator::proto as pb;
use common::{all_tasks, spec, start_server, submit_request};
use tonic::Code;

#[tokio::test]
async fn submit_get_list_and_cancel() {
    let server = start_server().await;
    let mut client = server.client().await;

    let mut first = spec("Fix the flaky test in tests/api.rs\nIt fails one run in ten.");
    first.tags = vec!["ci".into(), "flaky".into()];
    first.priority = pb::Priority::High as i32;
    first.agent = Some(pb::AgentSettings {
        r#type: pb::AgentType::Claude as i32,
        model: "claude-sonnet-4-5".into(),
        allowed_tools: vec!["Read".into(), "Edit".into()],
        max_budget_usd: 2.5,
        max_turns: 12,
    });
    first.timeout = "1h 30m".into();
    let submitted = client
        .submit_task(submit_request(first))
        .await
        .unwrap()
        .into_inner();
    assert!(submitted.created);
    let task = submitted.task.unwrap();
    assert_eq!(task.state, pb::TaskState::Queued as i32);
    assert_eq!(task.timeout_seconds, 5400);
    let spec_back = task.spec.clone().unwrap();
    assert_eq!(spec_back.name, "Fix the flaky test in tests/api.rs");
    assert_eq!(spec_back.agent.as_ref().unwrap().max_budget_usd, 2.5);

    let got = client
        .get_task(pb::GetTaskRequest {
            id: task.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(got, task);

    let mut other = spec("Update the README");
    other.project = "other".into();
    other.tags = vec!["docs".into()];
    let other = client
        .submit_task(submit_request(other))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    let third = client
        .submit_task(submit_request(spec("Bump dependencies")))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();

    // Newest first, filtered by project and by tag.
    let ids = |tasks: &[pb::Task]| tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
    let all = all_tasks(&mut client).await;
    assert_eq!(
        ids(&all),
        vec![third.id.clone(), other.id.clone(), task.id.clone()]
    );
    let by_project = client
        .list_tasks(pb::ListTasksRequest {
            project: "demo".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ids(&by_project.tasks),
        vec![third.id.clone(), task.id.clone()]
    );
    let by_tag = client
        .list_tasks(pb::ListTasksRequest {
            tag: "flaky".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&by_tag.tasks), vec![task.id.clone()]);

    // Cancel with a reason; then the state filter sees it.
    let cancelled = client
        .cancel_task(pb::CancelTaskRequest {
            id: other.id.clone(),
            reason: "not needed".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(cancelled.state, pb::TaskState::Cancelled as i32);
    assert_eq!(cancelled.state_reason, "not needed");
    let by_state = client
        .list_tasks(pb::ListTasksRequest {
            states: vec![pb::TaskState::Cancelled as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&by_state.tasks), vec![other.id.clone()]);
    let queued = client
        .list_tasks(pb::ListTasksRequest {
            states: vec![pb::TaskState::Queued as i32, pb::TaskState::Pending as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&queued.tasks), vec![third.id.clone(), task.id.clone()]);

    // Cancelling again (a retried request) changes nothing and says so by
    // returning the task as the first cancel left it.
    let again = client
        .cancel_task(pb::CancelTaskRequest {
            id: other.id.clone(),
            reason: "twice".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(again.state, pb::TaskState::Cancelled as i32);
    assert_eq!(again.state_reason, "not needed");
    assert_eq!(again.updated_at, cancelled.updated_at);

    // Unknown ids are NOT_FOUND; malformed ones INVALID_ARGUMENT.
    let err = client
        .get_task(pb::GetTaskRequest {
            id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .cancel_task(pb::CancelTaskRequest {
            id: "nope".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn listing_pages_through_every_task_once() {
    let server = start_server().await;
    let mut client = server.client().await;
    let mut submitted = Vec::new();
    for i in 0..23 {
        let mut s = spec(&format!("task {i}"));
        if i % 3 == 0 {
            s.tags = vec!["third".into()];
        }
        let task = client
            .submit_task(submit_request(s))
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        submitted.push(task.id);
    }
    submitted.reverse();

    let mut seen = Vec::new();
    let mut pages = 0;
    let mut page_token = String::new();
    loop {
        let page = client
            .list_tasks(pb::ListTasksRequest {
                page_size: 5,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.tasks.len() <= 5);
        seen.extend(page.tasks.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, submitted);
    assert_eq!(pages, 5);

    // Paging composes with filters.
    let tagged = client
        .list_tasks(pb::ListTasksRequest {
            tag: "third".into(),
            page_size: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tagged.tasks.len(), 3);
    assert!(!tagged.next_page_token.is_empty());

    let err = client
        .list_tasks(pb::ListTasksRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("page_token"), "{}", err.message());
}

#[tokio::test]
async fn an_idempotency_key_never_makes_a_second_task() {
    let server = start_server().await;
    let mut client = server.client().await;
    let request = pb::SubmitTaskRequest {
        spec: Some(spec("Run the migration")),
        idempotency_key: "deploy-42".into(),
        ..Default::default()
    };
    let first = client
        .submit_task(request.clone())
        .await
        .unwrap()
        .into_inner();
    let again = client
        .submit_task(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    assert!(!again.created);
    assert_eq!(
        first.task.as_ref().unwrap().id,
        again.task.as_ref().unwrap().id
    );

    // Racing submits with one new key: exactly one task.
    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let mut client = server.client().await;
        let mut request = request.clone();
        request.idempotency_key = "race".into();
        racers.spawn(async move { client.submit_task(request).await.unwrap().into_inner() });
    }
    let mut ids = Vec::new();
    let mut created = 0;
    while let Some(result) = racers.join_next().await {
        let response = result.unwrap();
        created += usize::from(response.created);
        ids.push(response.task.unwrap().id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(created, 1);
    assert_eq!(all_tasks(&mut client).await.len(), 2);
}

#[tokio::test]
async fn dependencies_gate_the_initial_state() {
    let server = start_server().await;
    let mut client = server.client().await;
    let first = client
        .submit_task(submit_request(spec("build")))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    let mut then = spec("deploy");
    then.depends_on = vec![first.id.clone()];
    then.parent_task_id = first.id.clone();
    let second = client
        .submit_task(submit_request(then))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(second.state, pb::TaskState::Pending as i32);
    assert_eq!(second.spec.unwrap().depends_on, vec![first.id.clone()]);
}

#[tokio::test]
async fn executions_are_served_from_the_store() {
    let mut server = start_server().await;
    let mut client = server.client().await;
    let task = client
        .submit_task(submit_request(spec("count the lines")))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    let listed = client
        .list_executions(pb::ListExecutionsRequest {
            task_id: task.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.executions.is_empty());

    // Record an attempt the way the executor does, through the store, then
    // read it back over gRPC from a restarted server.
    server.stop().await;
    let store = server.open_store().await;
    let core_task = store
        .get_task(task.id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let mut execution = claudomator::core::model::Execution::start(
        &core_task,
        1,
        claudomator::core::model::AgentType::Claude,
        "claude-sonnet-4-5",
    );
    execution.state = claudomator::core::model::ExecutionState::Succeeded;
    execution.ended_at = Some(execution.started_at + 1500);
    execution.exit_code = Some(0);
    execution.session_id = "3f1c".into();
    execution.cost_usd = 0.0123;
    execution.input_tokens = 1200;
    execution.output_tokens = 340;
    execution.turns = 3;
    execution.changed_files = vec!["src/lib.rs".into()];
    execution.commits = vec!["abc123".into()];
    execution.summary = "## Summary\nDone.".into();
    execution.permission_denials = vec!["Bash rm -rf /".into()];
    store.save_execution(execution.clone()).await.unwrap();
    drop(store);

    let server = server.restart().await;
    let mut client = server.client().await;
    let got = client
        .get_execution(pb::GetExecutionRequest {
            id: execution.id.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    assert_eq!(got.task_id, task.id);
    assert_eq!(got.state, pb::ExecutionState::Succeeded as i32);
    assert_eq!(got.exit_code, Some(0));
    assert_eq!(got.cost_usd, 0.0123);
    assert_eq!(
        (got.input_tokens, got.output_tokens, got.turns),
        (1200, 340, 3)
    );
    assert_eq!(got.changed_files, vec!["src/lib.rs".to_string()]);
    assert_eq!(got.agent, pb::AgentType::Claude as i32);
    assert_eq!(got.permission_denials, vec!["Bash rm -rf /".to_string()]);
    let listed = client
        .list_executions(pb::ListExecutionsRequest {
            task_id: task.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.executions, vec![got]);

    let err = client
        .get_execution(pb::GetExecutionRequest {
            id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .list_executions(pb::ListExecutionsRequest {
            task_id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn a_restart_keeps_every_task_unchanged() {
    let server = start_server().await;
    let mut client = server.client().await;
    for i in 0..30 {
        let mut s = spec(&format!("task number {i}"));
        s.tags = vec![format!("batch-{}", i % 4)];
        s.priority = i % 3 + 1;
        let task = client
            .submit_task(pb::SubmitTaskRequest {
                spec: Some(s),
                idempotency_key: format!("key-{i}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        if i % 5 == 0 {
            client
                .cancel_task(pb::CancelTaskRequest {
                    id: task.id,
                    reason: format!("reason {i}"),
                })
                .await
                .unwrap();
        }
    }
    let before = all_tasks(&mut client).await;
    assert_eq!(before.len(), 30);
    drop(client);

    let server = server.restart().await;
    let mut client = server.client().await;
    let after = all_tasks(&mut client).await;
    assert_eq!(after, before);

    // Idempotency keys survive the restart too.
    let again = client
        .submit_task(pb::SubmitTaskRequest {
            spec: Some(spec("task number 7")),
            idempotency_key: "key-7".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    assert_eq!(all_tasks(&mut client).await.len(), 30);
}
