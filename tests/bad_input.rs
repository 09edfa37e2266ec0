//! Every invalid SubmitTask field is INVALID_ARGUMENT naming the field, and
//! writes nothing.

mod common;

use claudomator::proto as pb;
use common::{all_tasks, spec, start_server_with, submit_request};
use tonic::Code;

fn with_agent(mut s: pb::TaskSpec, agent: pb::AgentSettings) -> pb::TaskSpec {
    s.agent = Some(agent);
    s
}

#[tokio::test]
async fn each_bad_field_is_rejected_and_nothing_is_written() {
    let server = start_server_with(|c| c.limits.max_instructions_bytes = 1000).await;
    let mut client = server.client().await;
    let existing = client
        .submit_task(submit_request(spec("an existing task")))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    let own_id = "01JDZ0Q3W2J9P6V5M4N8K7H6G5".to_string();

    let cases: Vec<(&str, pb::SubmitTaskRequest, &str)> = vec![
        (
            "empty instructions",
            submit_request(spec("   ")),
            "spec.instructions",
        ),
        (
            "no spec at all",
            pb::SubmitTaskRequest::default(),
            "spec.instructions",
        ),
        (
            "oversize instructions",
            submit_request(spec(&"x".repeat(1001))),
            "spec.instructions",
        ),
        (
            "unknown agent type",
            submit_request(with_agent(
                spec("a"),
                pb::AgentSettings {
                    r#type: 42,
                    ..Default::default()
                },
            )),
            "spec.agent.type",
        ),
        (
            "unknown project",
            submit_request(pb::TaskSpec {
                project: "elsewhere".into(),
                ..spec("a")
            }),
            "spec.project",
        ),
        (
            "missing project with several configured",
            submit_request(pb::TaskSpec {
                project: String::new(),
                ..spec("a")
            }),
            "spec.project",
        ),
        (
            "unknown dependency",
            submit_request(pb::TaskSpec {
                depends_on: vec!["01ARZ3NDEKTSV4RRFFQ69G5FAV".into()],
                ..spec("a")
            }),
            "spec.depends_on",
        ),
        (
            "malformed dependency",
            submit_request(pb::TaskSpec {
                depends_on: vec!["task-1".into()],
                ..spec("a")
            }),
            "spec.depends_on",
        ),
        (
            "duplicate dependency",
            submit_request(pb::TaskSpec {
                depends_on: vec![existing.id.clone(), existing.id.clone()],
                ..spec("a")
            }),
            "spec.depends_on",
        ),
        (
            "dependency cycle",
            pb::SubmitTaskRequest {
                spec: Some(pb::TaskSpec {
                    depends_on: vec![existing.id.clone(), own_id.clone()],
                    ..spec("a")
                }),
                task_id: own_id.clone(),
                ..Default::default()
            },
            "spec.depends_on",
        ),
        (
            "unknown parent",
            submit_request(pb::TaskSpec {
                parent_task_id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
                ..spec("a")
            }),
            "spec.parent_task_id",
        ),
        (
            "negative budget",
            submit_request(with_agent(
                spec("a"),
                pb::AgentSettings {
                    max_budget_usd: -0.5,
                    ..Default::default()
                },
            )),
            "spec.agent.max_budget_usd",
        ),
        (
            "unparsable timeout",
            submit_request(pb::TaskSpec {
                timeout: "a while".into(),
                ..spec("a")
            }),
            "spec.timeout",
        ),
        (
            "timeout over the limit",
            submit_request(pb::TaskSpec {
                timeout: "30d".into(),
                ..spec("a")
            }),
            "spec.timeout",
        ),
        (
            "unknown priority",
            submit_request(pb::TaskSpec {
                priority: 9,
                ..spec("a")
            }),
            "spec.priority",
        ),
        (
            "bad tag",
            submit_request(pb::TaskSpec {
                tags: vec!["two words".into()],
                ..spec("a")
            }),
            "spec.tags",
        ),
        (
            "too many attempts",
            submit_request(pb::TaskSpec {
                max_attempts: 1000,
                ..spec("a")
            }),
            "spec.max_attempts",
        ),
        (
            "malformed task id",
            pb::SubmitTaskRequest {
                spec: Some(spec("a")),
                task_id: "mine".into(),
                ..Default::default()
            },
            "task_id",
        ),
    ];

    for (what, request, field) in cases {
        let err = client.submit_task(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().starts_with(&format!("{field}: ")),
            "{what}: expected the message to name {field}, got `{}`",
            err.message()
        );
    }

    let tasks = all_tasks(&mut client).await;
    assert_eq!(tasks.len(), 1, "a rejected submit wrote something");
    assert_eq!(tasks[0].id, existing.id);
}

#[tokio::test]
async fn a_taken_task_id_is_already_exists() {
    let server = start_server_with(|_| {}).await;
    let mut client = server.client().await;
    let request = pb::SubmitTaskRequest {
        spec: Some(spec("mine")),
        task_id: "01JDZ0Q3W2J9P6V5M4N8K7H6G5".into(),
        ..Default::default()
    };
    let task = client
        .submit_task(request.clone())
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(task.id, "01JDZ0Q3W2J9P6V5M4N8K7H6G5");
    let err = client.submit_task(request).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(all_tasks(&mut client).await.len(), 1);
}

#[tokio::test]
async fn an_unknown_state_filter_is_rejected() {
    let server = start_server_with(|_| {}).await;
    let mut client = server.client().await;
    let err = client
        .list_tasks(pb::ListTasksRequest {
            states: vec![77],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("states: "), "{}", err.message());
}
