//! Every invalid SubmitTask field is INVALID_ARGUMENT naming the field, and
//! writes nothing; the status details list every bad field
//! (`google.rpc.BadRequest`), and a task in the wrong state is
//! FAILED_PRECONDITION with a `google.rpc.PreconditionFailure`.

#[path = "support/chat_mock.rs"]
mod chat_mock;
mod common;
#[path = "support/http_thread.rs"]
mod http_thread;

use chat_mock::{ChatMock, Reply};
use claudomator::proto as pb;
use claudomator::rpc_status as rpc;
use common::{agent_spec, all_tasks, spec, start_server_with, submit, submit_request};
use prost::Message;
use tonic::Code;

/// The `google.rpc.Status` a failed call carries in its details trailer.
fn rpc_status_of(err: &tonic::Status) -> rpc::Status {
    rpc::Status::decode(err.details()).expect("the details are a google.rpc.Status")
}

/// The fields an INVALID_ARGUMENT's `BadRequest` names, in its order.
fn bad_fields(err: &tonic::Status) -> Vec<String> {
    let bad_request: rpc::BadRequest = detail(err, "BadRequest");
    bad_request
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

/// The one detail of type `name` in a failed call's status.
fn detail<M: Message + Default>(err: &tonic::Status, name: &str) -> M {
    let status = rpc_status_of(err);
    assert_eq!(status.code, err.code() as i32);
    assert_eq!(status.message, err.message());
    let found: Vec<_> = status
        .details
        .iter()
        .filter(|any| any.type_url == rpc::type_url(name))
        .collect();
    assert_eq!(found.len(), 1, "{:?}", status.details);
    M::decode(found[0].value.as_slice()).unwrap()
}

#[tokio::test]
async fn a_submit_with_three_bad_fields_hears_of_all_three_in_the_details() {
    let server = start_server_with(|_| {}).await;
    let mut client = server.client().await;
    let mut bad = spec("three things wrong");
    bad.timeout = "soon".into();
    bad.agent = Some(pb::AgentSettings {
        max_budget_usd: -5.0,
        ..Default::default()
    });
    bad.max_attempts = 1000;
    let err = client.submit_task(submit_request(bad)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // The message is a sentence: the first field, and how many more.
    assert!(
        err.message().starts_with("spec.agent.max_budget_usd: ")
            && err
                .message()
                .ends_with("; and 2 more (spec.timeout, spec.max_attempts)"),
        "{}",
        err.message()
    );
    assert_eq!(
        bad_fields(&err),
        [
            "spec.agent.max_budget_usd",
            "spec.timeout",
            "spec.max_attempts"
        ]
    );
    let bad_request: rpc::BadRequest = detail(&err, "BadRequest");
    for v in &bad_request.field_violations {
        assert!(!v.description.is_empty(), "{v:?}");
    }
    assert!(
        bad_request.field_violations[1]
            .description
            .contains("`soon`")
    );
    assert!(all_tasks(&mut client).await.is_empty());

    // Other requests with several fields report each too.
    let err = client
        .list_tasks(pb::ListTasksRequest {
            tag: "a\u{1b}b".into(),
            page_size: 100_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), ["tag", "page_size"]);
    let err = client
        .answer_question(pb::AnswerQuestionRequest {
            task_id: "nonsense".into(),
            answer: " ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), ["task_id", "answer"]);
    // And what only the store knows: every task named that does not exist.
    let mut unknown = spec("depends on nothing that exists");
    unknown.depends_on = vec![
        "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
        "01ARZ3NDEKTSV4RRFFQ69G5FAW".into(),
    ];
    unknown.parent_task_id = "01ARZ3NDEKTSV4RRFFQ69G5FAX".into();
    let err = client
        .submit_task(submit_request(unknown))
        .await
        .unwrap_err();
    assert_eq!(
        bad_fields(&err),
        ["spec.depends_on", "spec.depends_on", "spec.parent_task_id"]
    );
}

#[tokio::test]
async fn cancelling_a_completed_task_is_failed_precondition_naming_the_states() {
    let mock = ChatMock::always(Reply::text("Done.\n\n## Summary\nDone."));
    let server = common::start_local_model_server(mock.endpoint(), |_| {}).await;
    let mut client = server.client().await;
    let task = submit(&mut client, agent_spec(pb::AgentType::Local, "Say done.")).await;
    let task = common::wait_completed(&mut client, &task.id).await;
    assert_eq!(task.state, pb::TaskState::Completed as i32);

    let err = client
        .cancel_task(pb::CancelTaskRequest {
            id: task.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(
        err.message(),
        "cannot move a task from COMPLETED to CANCELLED"
    );
    let failure: rpc::PreconditionFailure = detail(&err, "PreconditionFailure");
    assert_eq!(
        failure.violations,
        [rpc::precondition_failure::Violation {
            r#type: "TASK_STATE".into(),
            subject: task.id.clone(),
            description: "current COMPLETED; wanted one of PENDING, QUEUED, RUNNING, READY, \
                          FAILED, TIMED_OUT, BLOCKED"
                .into(),
        }]
    );

    // Answering it is refused the same way; a not-found carries no details.
    let err = client
        .answer_question(pb::AnswerQuestionRequest {
            task_id: task.id.clone(),
            answer: "yes".into(),
        })
        .await
        .unwrap_err();
    let failure: rpc::PreconditionFailure = detail(&err, "PreconditionFailure");
    assert_eq!(
        failure.violations[0].description,
        "current COMPLETED; wanted BLOCKED"
    );
    let err = client
        .get_task(pb::GetTaskRequest {
            id: "01JDZ0Q3W2J9P6V5M4N8K7H6G5".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.details().is_empty());
}

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

#[tokio::test]
async fn a_diff_or_merge_of_a_bad_task_or_branch_is_refused() {
    let server = start_server_with(|_| {}).await;
    let mut client = server.client().await;
    let existing = client
        .submit_task(submit_request(spec("not run")))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    let diff = |task_id: &str, context_lines| pb::GetTaskDiffRequest {
        task_id: task_id.into(),
        context_lines,
    };
    let cases = [
        (diff("nonsense", 3), Code::InvalidArgument, "task_id: "),
        (
            diff(&existing.id, 1001),
            Code::InvalidArgument,
            "context_lines: 1001",
        ),
        (
            diff("01ARZ3NDEKTSV4RRFFQ69G5FAV", 3),
            Code::NotFound,
            "task 01ARZ3NDEKTSV4RRFFQ69G5FAV not found",
        ),
        // Never run: no branch yet.
        (
            diff(&existing.id, 0),
            Code::FailedPrecondition,
            "there is no branch claudomator/",
        ),
    ];
    for (request, code, message) in cases {
        let err = client.get_task_diff(request).await.unwrap_err();
        assert_eq!(err.code(), code, "{}", err.message());
        assert!(err.message().contains(message), "{}", err.message());
    }
    // Merging: a branch name that is an option or a revision expression,
    // and work that is not done.
    let merge = |into: &str| pb::MergeTaskRequest {
        task_id: existing.id.clone(),
        into: into.into(),
        rebase: false,
    };
    for into in ["--upload-pack=x", "main..evil", "a b", "x@{1}", "HEAD~1"] {
        let err = client.merge_task(merge(into)).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{into}: {}",
            err.message()
        );
        assert!(err.message().starts_with("into: "), "{}", err.message());
    }
    let err = client.merge_task(merge("")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("only work that is done"),
        "{}",
        err.message()
    );
    let failure: rpc::PreconditionFailure = detail(&err, "PreconditionFailure");
    assert_eq!(
        failure.violations[0].description,
        "current QUEUED; wanted one of READY, COMPLETED"
    );
    // A diff without a branch is not about the task's state: no details.
    let err = client
        .get_task_diff(diff(&existing.id, 0))
        .await
        .unwrap_err();
    assert!(err.details().is_empty());
}

/// One row of the README's "Limits" table per case: each over-limit or
/// hostile value is INVALID_ARGUMENT naming its field, the message quotes at
/// most a short prefix of the value, and nothing is written.
#[tokio::test]
async fn every_limit_is_enforced_where_the_input_enters() {
    let server = start_server_with(|c| c.limits.max_instructions_bytes = 1000).await;
    let mut client = server.client().await;
    let existing = client
        .submit_task(submit_request(spec("an existing task")))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    let long = |n: usize| "y".repeat(n);
    let with = |f: &dyn Fn(&mut pb::TaskSpec)| {
        let mut s = spec("a");
        f(&mut s);
        submit_request(s)
    };
    let agent = |f: &dyn Fn(&mut pb::AgentSettings)| {
        let mut a = pb::AgentSettings::default();
        f(&mut a);
        submit_request(with_agent(spec("a"), a))
    };
    let keyed = |key: &str| pb::SubmitTaskRequest {
        idempotency_key: key.into(),
        ..submit_request(spec("a"))
    };
    let with_id = |id: &str| pb::SubmitTaskRequest {
        task_id: id.into(),
        ..submit_request(spec("a"))
    };
    let submits: Vec<(&str, pb::SubmitTaskRequest, &str)> = vec![
        (
            "5 MB instructions",
            submit_request(spec(&"x".repeat(5_000_000))),
            "spec.instructions",
        ),
        (
            "NUL in instructions",
            submit_request(spec("fix\0it")),
            "spec.instructions",
        ),
        (
            "ESC in instructions",
            submit_request(spec("fix \x1b[31mit")),
            "spec.instructions",
        ),
        ("name too long", with(&|s| s.name = long(201)), "spec.name"),
        (
            "newline in name",
            with(&|s| s.name = "a\nb".into()),
            "spec.name",
        ),
        ("CR in name", with(&|s| s.name = "a\rb".into()), "spec.name"),
        (
            "ESC in name",
            with(&|s| s.name = "a\x1b]0;pwned\x07".into()),
            "spec.name",
        ),
        (
            "U+2028 in name",
            with(&|s| s.name = "a\u{2028}b".into()),
            "spec.name",
        ),
        (
            "bidi override in name",
            with(&|s| s.name = "a\u{202E}b".into()),
            "spec.name",
        ),
        (
            "too many tags",
            with(&|s| s.tags = (0..33).map(|i| format!("t{i}")).collect()),
            "spec.tags",
        ),
        (
            "tag too long",
            with(&|s| s.tags = vec![long(65)]),
            "spec.tags",
        ),
        (
            "control character in a tag",
            with(&|s| s.tags = vec!["a\x1bb".into()]),
            "spec.tags",
        ),
        (
            "reserved tag ci-run:",
            with(&|s| s.tags = vec!["ci-run:1".into()]),
            "spec.tags",
        ),
        (
            "reserved tag ci-sha:",
            with(&|s| s.tags = vec!["ci-sha:abc".into()]),
            "spec.tags",
        ),
        (
            "reserved tag ci-commit-at:",
            with(&|s| s.tags = vec!["ci-commit-at:1".into()]),
            "spec.tags",
        ),
        (
            "reserved tag ci-pr:",
            with(&|s| s.tags = vec!["ci-pr:1".into()]),
            "spec.tags",
        ),
        (
            "project with ESC",
            with(&|s| s.project = "demo\x1b".into()),
            "spec.project",
        ),
        (
            "project too long",
            with(&|s| s.project = long(201)),
            "spec.project",
        ),
        (
            "unknown long project",
            with(&|s| s.project = long(150)),
            "spec.project",
        ),
        (
            "model too long",
            agent(&|a| a.model = long(201)),
            "spec.agent.model",
        ),
        (
            "model with NUL",
            agent(&|a| a.model = "m\0".into()),
            "spec.agent.model",
        ),
        (
            "model like an option",
            agent(&|a| a.model = "--help".into()),
            "spec.agent.model",
        ),
        (
            "too many tools",
            agent(&|a| a.allowed_tools = (0..65).map(|i| format!("T{i}")).collect()),
            "spec.agent.allowed_tools",
        ),
        (
            "tool name too long",
            agent(&|a| a.allowed_tools = vec![long(201)]),
            "spec.agent.allowed_tools",
        ),
        (
            "tool name with LF",
            agent(&|a| a.allowed_tools = vec!["Read\nWrite".into()]),
            "spec.agent.allowed_tools",
        ),
        (
            "too many turns",
            agent(&|a| a.max_turns = 10_001),
            "spec.agent.max_turns",
        ),
        (
            "timeout under 1 s",
            with(&|s| s.timeout = "500ms".into()),
            "spec.timeout",
        ),
        (
            "timeout over the limit",
            with(&|s| s.timeout = "8d".into()),
            "spec.timeout",
        ),
        (
            "timeout text too long",
            with(&|s| s.timeout = long(100)),
            "spec.timeout",
        ),
        (
            "too many dependencies",
            with(&|s| s.depends_on = (0..101).map(|_| existing.id.clone()).collect()),
            "spec.depends_on",
        ),
        (
            "base ref too long",
            with(&|s| s.base_ref = long(201)),
            "spec.base_ref",
        ),
        (
            "idempotency key too long",
            keyed(&long(201)),
            "idempotency_key",
        ),
        ("idempotency key with CR", keyed("k\r1"), "idempotency_key"),
        (
            "id past 128 bits",
            with_id("ZZZZZZZZZZZZZZZZZZZZZZZZZZ"),
            "task_id",
        ),
        (
            "id in lower case",
            with_id("01jdz0q3w2j9p6v5m4n8k7h6g5"),
            "task_id",
        ),
        (
            "id with a letter Crockford leaves out",
            with_id("01JDZ0Q3W2J9P6V5M4N8K7H6GU"),
            "task_id",
        ),
        ("id too long", with_id(&"0".repeat(27)), "task_id"),
        (
            "parent id past 128 bits",
            with(&|s| s.parent_task_id = "8ZZZZZZZZZZZZZZZZZZZZZZZZZ".into()),
            "spec.parent_task_id",
        ),
    ];
    for (what, request, field) in submits {
        let err = client.submit_task(request).await.unwrap_err();
        check(what, &err, field);
    }

    let bad_id = "ZZZZZZZZZZZZZZZZZZZZZZZZZZ".to_string();
    let err = client
        .get_task(pb::GetTaskRequest { id: bad_id.clone() })
        .await
        .unwrap_err();
    check("GetTask id past 128 bits", &err, "id");
    let list = |f: &dyn Fn(&mut pb::ListTasksRequest)| {
        let mut r = pb::ListTasksRequest::default();
        f(&mut r);
        r
    };
    for (what, request, field) in [
        (
            "too many state filters",
            list(&|r| r.states = vec![1; 17]),
            "states",
        ),
        (
            "page size over the limit",
            list(&|r| r.page_size = 501),
            "page_size",
        ),
        (
            "project filter with ESC",
            list(&|r| r.project = "\x1b[2J".into()),
            "project",
        ),
        ("tag filter too long", list(&|r| r.tag = long(65)), "tag"),
        (
            "page token not ours",
            list(&|r| r.page_token = bad_id.clone()),
            "page_token",
        ),
    ] {
        let err = client.list_tasks(request).await.unwrap_err();
        check(what, &err, field);
    }
    let err = client
        .list_executions(pb::ListExecutionsRequest {
            task_id: existing.id.clone(),
            page_size: 501,
            ..Default::default()
        })
        .await
        .unwrap_err();
    check("executions page size over the limit", &err, "page_size");
    let err = client
        .cancel_task(pb::CancelTaskRequest {
            id: existing.id.clone(),
            reason: long(4097),
        })
        .await
        .unwrap_err();
    check("cancel reason too long", &err, "reason");
    let err = client
        .cancel_task(pb::CancelTaskRequest {
            id: existing.id.clone(),
            reason: "why\0".into(),
        })
        .await
        .unwrap_err();
    check("cancel reason with NUL", &err, "reason");
    let err = client
        .answer_question(pb::AnswerQuestionRequest {
            task_id: existing.id.clone(),
            answer: long(64 * 1024 + 1),
        })
        .await
        .unwrap_err();
    check("answer too long", &err, "answer");
    let err = client
        .reject_task(pb::RejectTaskRequest {
            task_id: existing.id.clone(),
            feedback: "redo \x1b[31m".into(),
        })
        .await
        .unwrap_err();
    check("feedback with ESC", &err, "feedback");
    let err = client
        .reject_task(pb::RejectTaskRequest {
            task_id: existing.id.clone(),
            feedback: long(64 * 1024 + 1),
        })
        .await
        .unwrap_err();
    check("feedback too long", &err, "feedback");
    let err = client
        .elaborate(pb::ElaborateRequest {
            text: "do \x1b]0;x\x07 it".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    check("elaborate text with ESC", &err, "text");

    let tasks = all_tasks(&mut client).await;
    assert_eq!(tasks.len(), 1, "a rejected request wrote something");
    assert_eq!(tasks[0].state, existing.state, "the existing task changed");
}

/// INVALID_ARGUMENT naming `field`, and a short message that quotes no
/// more than a prefix of the value.
fn check(what: &str, err: &tonic::Status, field: &str) {
    assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    assert!(
        err.message().starts_with(&format!("{field}: ")),
        "{what}: expected the message to name {field}, got `{}`",
        err.message()
    );
    assert!(
        err.message().len() < 400 && !err.message().contains(&"y".repeat(33)),
        "{what}: the message quotes too much: {}",
        err.message()
    );
    assert!(
        !err.message().contains(['\0', '\x1b', '\r', '\n']),
        "{what}: the message holds a control character: {:?}",
        err.message()
    );
}

#[tokio::test]
async fn a_message_that_is_not_protobuf_is_invalid_argument() {
    let server = start_server_with(|_| {}).await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    // Field 1 of GetTaskRequest is a string; a Timestamp sends a varint there.
    let codec = tonic_prost::ProstCodec::<prost_types::Timestamp, pb::GetTaskResponse>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/claudomator.v1.ClaudomatorService/GetTask",
    );
    let err = grpc
        .unary(
            tonic::Request::new(prost_types::Timestamp {
                seconds: 5,
                nanos: 0,
            }),
            path,
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("Protobuf"), "{}", err.message());
}

#[tokio::test]
async fn accepting_a_running_task_is_refused_and_leaves_it_running() {
    // The state machine lets the executor complete a running task; accept
    // is a reviewer's verdict on READY work and must not.
    let mock = ChatMock::always(Reply::Hang);
    let server = common::start_local_model_server(mock.endpoint(), |_| {}).await;
    let mut client = server.client().await;
    let task = submit(&mut client, agent_spec(pb::AgentType::Local, "Think long.")).await;
    common::wait_for(&mut client, &task.id, &[pb::TaskState::Running]).await;

    let err = client
        .accept_task(pb::AcceptTaskRequest {
            task_id: task.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(
        err.message(),
        format!("task {} is RUNNING, not READY", task.id)
    );
    let failure: rpc::PreconditionFailure = detail(&err, "PreconditionFailure");
    assert_eq!(
        failure.violations[0].description,
        "current RUNNING; wanted READY"
    );
    assert_eq!(
        common::get(&mut client, &task.id).await.state,
        pb::TaskState::Running as i32
    );
}
