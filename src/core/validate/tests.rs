//! Unit tests of `core::validate`.

use super::*;
use crate::core::model::TaskSpec;

fn rules() -> TaskRules {
    TaskRules {
        projects: vec!["demo".into(), "other".into()],
        max_instructions_bytes: 100,
        ..TaskRules::default()
    }
}

fn request(f: impl FnOnce(&mut TaskSpec)) -> SubmitRequest {
    let mut spec = TaskSpec {
        instructions: "Fix the flaky test\nIt fails on CI.".into(),
        project: "demo".into(),
        ..TaskSpec::default()
    };
    f(&mut spec);
    SubmitRequest {
        spec,
        ..SubmitRequest::default()
    }
}

/// The one bad field of a request that has one.
fn field_of(req: SubmitRequest) -> String {
    let fields = fields_of(req);
    assert_eq!(fields.len(), 1, "{fields:?}");
    fields[0].clone()
}

/// Every bad field of a request, in the order validation reports them.
fn fields_of(req: SubmitRequest) -> Vec<String> {
    match validate(&req, &rules()) {
        Err(CoreError::InvalidArgument(found)) => found.iter().map(|v| v.field.clone()).collect(),
        other => panic!("expected an invalid argument, got {other:?}"),
    }
}

#[test]
fn every_bad_field_is_reported_not_only_the_first() {
    let req = request(|s| {
        s.instructions = " ".into();
        s.agent.max_budget_usd = -1.0;
        s.timeout = "soon".into();
        s.priority = "urgent".into();
        s.tags = vec!["a b".into(), "ok".into(), "c,d".into()];
        s.depends_on = vec!["nope".into()];
        s.max_attempts = 1000;
    });
    assert_eq!(
        fields_of(req.clone()),
        [
            "spec.instructions",
            "spec.agent.max_budget_usd",
            "spec.timeout",
            "spec.priority",
            "spec.tags",
            "spec.tags",
            "spec.depends_on",
            "spec.max_attempts",
        ]
    );
    let message = validate(&req, &rules()).unwrap_err().to_string();
    assert!(
        message.starts_with("spec.instructions: must not be empty; and 7 more (spec.agent.max_budget_usd, spec.timeout, spec.priority, spec.tags, spec.depends_on, spec.max_attempts)"),
        "{message}"
    );
}

#[test]
fn a_client_submit_with_a_reserved_tag_hears_of_the_other_bad_fields_too() {
    let req = request(|s| {
        s.tags = vec!["ci-run:1".into()];
        s.timeout = "soon".into();
    });
    let found = check_client_submit(&req, &rules()).unwrap_err();
    let fields: Vec<&str> = found.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["spec.tags", "spec.timeout"]);
    assert!(check_client_submit(&request(|_| {}), &rules()).is_ok());
}

#[test]
fn a_minimal_spec_gets_the_defaults() {
    let task = validate(&request(|_| {}), &rules()).unwrap();
    assert_eq!(task.name, "Fix the flaky test");
    assert_eq!(task.agent.agent_type, AgentType::Auto);
    assert_eq!(task.priority, Priority::Normal);
    assert_eq!(task.timeout, Duration::from_secs(1800));
    assert_eq!(task.max_attempts, 3);
    assert_eq!(task.state, TaskState::Pending);
}

#[test]
fn each_bad_field_is_named() {
    assert_eq!(
        field_of(request(|s| s.instructions = "  ".into())),
        "spec.instructions"
    );
    assert_eq!(
        field_of(request(|s| s.instructions = "x".repeat(101))),
        "spec.instructions"
    );
    assert_eq!(
        field_of(request(|s| s.project = "nope".into())),
        "spec.project"
    );
    assert_eq!(field_of(request(|s| s.project = "".into())), "spec.project");
    assert_eq!(
        field_of(request(|s| s.agent.agent_type = "robot".into())),
        "spec.agent.type"
    );
    assert_eq!(
        field_of(request(|s| s.agent.max_budget_usd = -1.0)),
        "spec.agent.max_budget_usd"
    );
    assert_eq!(
        field_of(request(|s| s.agent.max_budget_usd = f64::NAN)),
        "spec.agent.max_budget_usd"
    );
    assert_eq!(
        field_of(request(|s| s.timeout = "soon".into())),
        "spec.timeout"
    );
    assert_eq!(
        field_of(request(|s| s.timeout = "0s".into())),
        "spec.timeout"
    );
    assert_eq!(
        field_of(request(|s| s.timeout = "3 days".into())),
        "spec.timeout"
    );
    assert_eq!(
        field_of(request(|s| s.priority = "urgent".into())),
        "spec.priority"
    );
    assert_eq!(
        field_of(request(|s| s.tags = vec!["a b".into()])),
        "spec.tags"
    );
    assert_eq!(
        field_of(request(|s| s.depends_on = vec!["x".into()])),
        "spec.depends_on"
    );
    assert_eq!(
        field_of(request(|s| s.max_attempts = 99)),
        "spec.max_attempts"
    );
    for base_ref in ["--upload-pack=x", "main..evil", "HEAD~1", "a b", "x@{1}"] {
        assert_eq!(
            field_of(request(|s| s.base_ref = base_ref.into())),
            "spec.base_ref",
            "{base_ref}"
        );
    }
    for base_ref in [
        "main",
        "feature/x",
        "v1.2",
        "3484a3fb816e0859fd6e1cea078d76385ff50625",
    ] {
        validate(&request(|s| s.base_ref = base_ref.into()), &rules()).unwrap();
    }
}

#[test]
fn only_canonical_ids_parse() {
    let id = Id::new();
    assert_eq!(id.to_string().parse::<Id>().unwrap(), id);
    assert_eq!(
        "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"
            .parse::<Id>()
            .unwrap()
            .to_string(),
        "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"
    );
    for bad in [
        "ZZZZZZZZZZZZZZZZZZZZZZZZZZ",
        "8ZZZZZZZZZZZZZZZZZZZZZZZZZ",
        "01jdz0q3w2j9p6v5m4n8k7h6g5",
        "01JDZ0Q3W2J9P6V5M4N8K7H6GU",
        "01JDZ0Q3W2J9P6V5M4N8K7H6G",
        "",
    ] {
        let err = bad.parse::<Id>().unwrap_err();
        assert!(err.contains("not a valid id"), "{bad}: {err}");
    }
    let err = "x".repeat(10_000).parse::<Id>().unwrap_err();
    assert!(err.len() < 200, "{err}");
}

#[test]
fn quotes_are_short_and_escaped() {
    assert_eq!(quote("abc"), "`abc`");
    assert_eq!(quote("a\x1bb"), "`a\\u{1b}b`");
    assert_eq!(quote(&"y".repeat(100)), format!("`{}…`", "y".repeat(32)));
}

#[test]
fn text_may_hold_lines_and_tabs_but_no_other_control() {
    check_text("f", "a\n\tb\r\n", 100).unwrap();
    for bad in ["a\0", "a\x1b[2J", "\x07", "\u{9b}"] {
        assert!(check_text("f", bad, 100).is_err(), "{bad:?}");
    }
    for bad in ["a\nb", "a\tb", "a\u{2029}", "a\u{2067}"] {
        assert!(check_line("f", bad, 100).is_err(), "{bad:?}");
    }
    check_line("f", "plain — text ✓", 100).unwrap();
}

#[test]
fn a_self_dependency_is_a_cycle() {
    let id = Id::new();
    let mut req = request(|s| s.depends_on = vec![id.to_string()]);
    req.task_id = id.to_string();
    let err = validate(&req, &rules()).unwrap_err().to_string();
    assert!(err.contains("cycle"), "{err}");
}

#[test]
fn one_project_is_the_default() {
    let rules = TaskRules {
        projects: vec!["solo".into()],
        ..TaskRules::default()
    };
    let task = validate(&request(|s| s.project.clear()), &rules).unwrap();
    assert_eq!(task.project, "solo");
}

#[test]
fn pull_requests_come_from_the_task_else_its_project_and_make_it_wait_for_review() {
    use crate::core::model::PullMode;
    let rules = TaskRules {
        project_pulls: vec![("demo".into(), PullMode::OnComplete)],
        ..rules()
    };
    let task = validate(&request(|_| {}), &rules).unwrap();
    assert_eq!(task.pull_requests, PullMode::OnComplete);
    assert!(task.review_required, "the pull request is the review");
    let task = validate(&request(|s| s.pull_requests = "off".into()), &rules).unwrap();
    assert_eq!(task.pull_requests, PullMode::Off);
    assert!(!task.review_required);
    let task = validate(&request(|s| s.project = "other".into()), &rules).unwrap();
    assert_eq!(
        task.pull_requests,
        PullMode::Off,
        "a project without the setting"
    );
    let task = validate(&request(|s| s.pull_requests = "On-Accept".into()), &rules).unwrap();
    assert_eq!(task.pull_requests, PullMode::OnAccept);
    assert_eq!(
        field_of(request(|s| s.pull_requests = "sometimes".into())),
        "spec.pull_requests"
    );
}
