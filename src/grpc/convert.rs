//! Generated proto types to core types and back. Decoding never fails on an
//! unknown enum number: it is passed on as text so that core validation names
//! the field in its error.

use prost_types::Timestamp;

use crate::core::CoreError;
use crate::core::elaborate::{ElaborateRequest, ElaborateSource, Elaboration};
use crate::core::logs::{LogKind, SharedEvent};
use crate::core::model::{
    self as m, AgentSettings, AgentSpec, Execution, SubmitRequest, Task, TaskSpec, UnixMillis,
};
use crate::core::watch::WatchEvent;
use crate::proto as pb;

pub fn timestamp(ms: UnixMillis) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn millis(ts: &Timestamp) -> UnixMillis {
    ts.seconds * 1000 + i64::from(ts.nanos) / 1_000_000
}

pub fn agent_to_pb(a: m::AgentType) -> pb::AgentType {
    match a {
        m::AgentType::Auto => pb::AgentType::Auto,
        m::AgentType::Claude => pb::AgentType::Claude,
        m::AgentType::Gemini => pb::AgentType::Gemini,
        m::AgentType::Codex => pb::AgentType::Codex,
        m::AgentType::Local => pb::AgentType::Local,
    }
}

/// The name core validation parses: empty for UNSPECIFIED, the number for a
/// value this server does not know.
fn agent_name(value: i32) -> String {
    match pb::AgentType::try_from(value) {
        Ok(pb::AgentType::Unspecified) => String::new(),
        Ok(pb::AgentType::Auto) => "auto".into(),
        Ok(pb::AgentType::Claude) => "claude".into(),
        Ok(pb::AgentType::Gemini) => "gemini".into(),
        Ok(pb::AgentType::Codex) => "codex".into(),
        Ok(pb::AgentType::Local) => "local".into(),
        Err(_) => value.to_string(),
    }
}

pub fn agent_from_pb(value: i32) -> Result<m::AgentType, String> {
    agent_name(value).parse()
}

pub fn priority_to_pb(p: m::Priority) -> pb::Priority {
    match p {
        m::Priority::Low => pb::Priority::Low,
        m::Priority::Normal => pb::Priority::Normal,
        m::Priority::High => pb::Priority::High,
    }
}

fn priority_name(value: i32) -> String {
    match pb::Priority::try_from(value) {
        Ok(pb::Priority::Unspecified) => String::new(),
        Ok(pb::Priority::Low) => "low".into(),
        Ok(pb::Priority::Normal) => "normal".into(),
        Ok(pb::Priority::High) => "high".into(),
        Err(_) => value.to_string(),
    }
}

pub fn state_to_pb(s: m::TaskState) -> pb::TaskState {
    use m::TaskState as S;
    match s {
        S::Pending => pb::TaskState::Pending,
        S::Queued => pb::TaskState::Queued,
        S::Running => pb::TaskState::Running,
        S::Ready => pb::TaskState::Ready,
        S::Completed => pb::TaskState::Completed,
        S::Failed => pb::TaskState::Failed,
        S::TimedOut => pb::TaskState::TimedOut,
        S::Cancelled => pb::TaskState::Cancelled,
        S::BudgetExceeded => pb::TaskState::BudgetExceeded,
        S::Blocked => pb::TaskState::Blocked,
    }
}

pub fn state_from_pb(value: i32) -> Result<m::TaskState, CoreError> {
    m::TaskState::ALL
        .iter()
        .copied()
        .find(|s| state_to_pb(*s) as i32 == value)
        .ok_or_else(|| {
            CoreError::invalid(
                "states",
                format!(
                    "unknown task state {value}; expected one of {}",
                    m::TaskState::names()
                ),
            )
        })
}

pub fn execution_state_to_pb(s: m::ExecutionState) -> pb::ExecutionState {
    use m::ExecutionState as S;
    match s {
        S::Running => pb::ExecutionState::Running,
        S::Succeeded => pb::ExecutionState::Succeeded,
        S::Failed => pb::ExecutionState::Failed,
        S::TimedOut => pb::ExecutionState::TimedOut,
        S::Cancelled => pb::ExecutionState::Cancelled,
        S::BudgetExceeded => pb::ExecutionState::BudgetExceeded,
        S::Blocked => pb::ExecutionState::Blocked,
        S::RateLimited => pb::ExecutionState::RateLimited,
        S::Interrupted => pb::ExecutionState::Interrupted,
    }
}

pub fn execution_state_from_pb(value: i32) -> Result<m::ExecutionState, String> {
    m::ExecutionState::ALL
        .iter()
        .copied()
        .find(|s| execution_state_to_pb(*s) as i32 == value)
        .ok_or_else(|| format!("unknown execution state {value}"))
}

pub fn log_kind_to_pb(kind: LogKind) -> pb::LogEventKind {
    match kind {
        LogKind::Text => pb::LogEventKind::Text,
        LogKind::ToolCall => pb::LogEventKind::ToolCall,
        LogKind::ToolResult => pb::LogEventKind::ToolResult,
        LogKind::System => pb::LogEventKind::System,
        LogKind::Result => pb::LogEventKind::Result,
        LogKind::Stderr => pb::LogEventKind::Stderr,
        LogKind::Question => pb::LogEventKind::Question,
        LogKind::Debug => pb::LogEventKind::Debug,
    }
}

/// One event as it goes on the wire; `e` is shared by every subscriber, so
/// this copies its strings and does no JSON work.
pub fn log_event_to_pb(execution_id: &str, e: &SharedEvent) -> pb::LogEvent {
    pb::LogEvent {
        execution_id: execution_id.to_string(),
        offset: e.offset,
        time: Some(timestamp(e.at)),
        kind: log_kind_to_pb(e.kind) as i32,
        text: e.text.clone(),
        payload_json: e.payload_json.clone(),
        raw: e.raw.clone(),
        raw_is_payload: e.raw_is_payload,
    }
}

pub fn spec_from_pb(spec: pb::TaskSpec) -> TaskSpec {
    let agent = spec.agent.unwrap_or_default();
    TaskSpec {
        name: spec.name,
        instructions: spec.instructions,
        project: spec.project,
        agent: AgentSpec {
            agent_type: agent_name(agent.r#type),
            model: agent.model,
            allowed_tools: agent.allowed_tools,
            max_budget_usd: agent.max_budget_usd,
            max_turns: agent.max_turns,
        },
        timeout: spec.timeout,
        priority: priority_name(spec.priority),
        tags: spec.tags,
        depends_on: spec.depends_on,
        parent_task_id: spec.parent_task_id,
        max_attempts: spec.max_attempts,
        review_required: spec.review_required,
        base_ref: spec.base_ref,
        start_from: start_from_name(spec.start_from),
        pull_requests: pull_mode_name(spec.pull_requests),
    }
}

fn pull_mode_name(value: i32) -> String {
    match pb::PullRequests::try_from(value) {
        Ok(pb::PullRequests::Unspecified) => String::new(),
        Ok(pb::PullRequests::Off) => "off".into(),
        Ok(pb::PullRequests::OnComplete) => "on_complete".into(),
        Ok(pb::PullRequests::OnAccept) => "on_accept".into(),
        // Refused by validation, naming the number.
        Err(_) => value.to_string(),
    }
}

fn pull_mode_to_pb(mode: m::PullMode) -> pb::PullRequests {
    match mode {
        m::PullMode::Off => pb::PullRequests::Off,
        m::PullMode::OnComplete => pb::PullRequests::OnComplete,
        m::PullMode::OnAccept => pb::PullRequests::OnAccept,
    }
}

/// A task's pull request record in proto form.
pub fn pull_to_pb(p: &crate::core::pulls::PullRecord) -> pb::PullRequest {
    pb::PullRequest {
        repository: p.repository.clone(),
        number: p.number,
        url: p.url.clone(),
        state: if p.is_opening() {
            "opening".into()
        } else {
            p.state.as_str().into()
        },
        head_ref: p.head_ref.clone(),
        head_sha: p.head_sha.clone(),
        base_ref: p.base_ref.clone(),
        automatic_resumes: p.resumes,
    }
}

/// A task with its pull request, if it has one.
pub fn task_with_pull_to_pb(t: &Task, pull: Option<&crate::core::pulls::PullRecord>) -> pb::Task {
    pb::Task {
        pull_request: pull.map(pull_to_pb),
        ..task_to_pb(t)
    }
}

fn start_from_name(value: i32) -> String {
    match pb::StartFrom::try_from(value) {
        Ok(pb::StartFrom::Unspecified) => String::new(),
        Ok(pb::StartFrom::Dependencies) => "dependencies".into(),
        Ok(pb::StartFrom::Head) => "head".into(),
        Ok(pb::StartFrom::WorkingTree) => "working_tree".into(),
        // Refused by validation, naming the number.
        Err(_) => value.to_string(),
    }
}

fn start_from_to_pb(start: m::StartFrom) -> pb::StartFrom {
    match start {
        m::StartFrom::Dependencies => pb::StartFrom::Dependencies,
        m::StartFrom::Head => pb::StartFrom::Head,
        m::StartFrom::WorkingTree => pb::StartFrom::WorkingTree,
    }
}

/// A client-side spec (names as text) in proto form. Names that do not
/// parse become UNSPECIFIED; callers validate them first.
pub fn spec_to_pb(spec: &TaskSpec) -> pb::TaskSpec {
    let agent_type = spec
        .agent
        .agent_type
        .parse()
        .map(agent_to_pb)
        .unwrap_or(pb::AgentType::Unspecified);
    let priority = spec
        .priority
        .parse()
        .map(priority_to_pb)
        .unwrap_or(pb::Priority::Unspecified);
    pb::TaskSpec {
        name: spec.name.clone(),
        instructions: spec.instructions.clone(),
        project: spec.project.clone(),
        agent: Some(pb::AgentSettings {
            r#type: agent_type as i32,
            model: spec.agent.model.clone(),
            allowed_tools: spec.agent.allowed_tools.clone(),
            max_budget_usd: spec.agent.max_budget_usd,
            max_turns: spec.agent.max_turns,
        }),
        timeout: spec.timeout.clone(),
        priority: priority as i32,
        tags: spec.tags.clone(),
        depends_on: spec.depends_on.clone(),
        parent_task_id: spec.parent_task_id.clone(),
        max_attempts: spec.max_attempts,
        review_required: spec.review_required,
        base_ref: spec.base_ref.clone(),
        start_from: spec
            .start_from
            .parse()
            .map(start_from_to_pb)
            .unwrap_or(pb::StartFrom::Unspecified) as i32,
        pull_requests: spec
            .pull_requests
            .parse()
            .map(pull_mode_to_pb)
            .unwrap_or(pb::PullRequests::Unspecified) as i32,
    }
}

pub fn submit_from_pb(req: pb::SubmitTaskRequest) -> SubmitRequest {
    SubmitRequest {
        spec: spec_from_pb(req.spec.unwrap_or_default()),
        idempotency_key: req.idempotency_key,
        task_id: req.task_id,
    }
}

pub fn task_to_pb(t: &Task) -> pb::Task {
    pb::Task {
        id: t.id.to_string(),
        spec: Some(spec_to_pb(&t.spec())),
        state: state_to_pb(t.state) as i32,
        state_reason: t.state_reason.clone(),
        summary: t.summary.clone(),
        attempts: t.attempts,
        idempotency_key: t.idempotency_key.clone().unwrap_or_default(),
        created_at: Some(timestamp(t.created_at)),
        updated_at: Some(timestamp(t.updated_at)),
        timeout_seconds: t.timeout.as_secs(),
        question: t.question.as_ref().map(|q| pb::Question {
            text: q.text.clone(),
            choices: q.choices.clone(),
            context: q.context.clone(),
            asked_at: Some(timestamp(q.asked_at)),
        }),
        pull_request: None,
    }
}

/// A task as the server sent it, back to the core type (used by the CLI).
pub fn task_from_pb(t: pb::Task) -> Result<Task, String> {
    let spec = spec_from_pb(t.spec.unwrap_or_default());
    let parse_id = |s: &str| s.parse::<m::Id>();
    Ok(Task {
        id: parse_id(&t.id)?,
        name: spec.name,
        instructions: spec.instructions,
        project: spec.project,
        agent: AgentSettings {
            agent_type: spec.agent.agent_type.parse().unwrap_or(m::AgentType::Auto),
            model: spec.agent.model,
            allowed_tools: spec.agent.allowed_tools,
            max_budget_usd: spec.agent.max_budget_usd,
            max_turns: spec.agent.max_turns,
        },
        timeout: std::time::Duration::from_secs(t.timeout_seconds),
        priority: spec.priority.parse().unwrap_or(m::Priority::Normal),
        tags: spec.tags,
        depends_on: spec
            .depends_on
            .iter()
            .map(|d| parse_id(d))
            .collect::<Result<_, _>>()?,
        parent_task_id: match spec.parent_task_id.as_str() {
            "" => None,
            id => Some(parse_id(id)?),
        },
        max_attempts: spec.max_attempts,
        review_required: spec.review_required,
        base_ref: spec.base_ref,
        start_from: spec.start_from.parse().unwrap_or_default(),
        pull_requests: spec.pull_requests.parse().unwrap_or_default(),
        idempotency_key: (!t.idempotency_key.is_empty()).then_some(t.idempotency_key),
        state: state_from_pb(t.state).map_err(|e| e.to_string())?,
        state_reason: t.state_reason,
        summary: t.summary,
        attempts: t.attempts,
        run_after: 0,
        question: t.question.map(|q| m::Question {
            text: q.text,
            choices: q.choices,
            context: q.context,
            asked_at: q.asked_at.as_ref().map(millis).unwrap_or_default(),
        }),
        pending_input: String::new(),
        created_at: t.created_at.as_ref().map(millis).unwrap_or_default(),
        updated_at: t.updated_at.as_ref().map(millis).unwrap_or_default(),
    })
}

pub fn agent_choice_to_pb(choice: m::AgentChoice) -> pb::AgentChoice {
    match choice {
        m::AgentChoice::Named => pb::AgentChoice::Named,
        m::AgentChoice::Model => pb::AgentChoice::Model,
        m::AgentChoice::Rule => pb::AgentChoice::Rule,
    }
}

/// UNSPECIFIED (an older server) reads as "named".
pub fn agent_choice_from_pb(value: i32) -> m::AgentChoice {
    match pb::AgentChoice::try_from(value) {
        Ok(pb::AgentChoice::Model) => m::AgentChoice::Model,
        Ok(pb::AgentChoice::Rule) => m::AgentChoice::Rule,
        _ => m::AgentChoice::Named,
    }
}

pub fn execution_to_pb(e: &Execution) -> pb::Execution {
    pb::Execution {
        id: e.id.to_string(),
        task_id: e.task_id.to_string(),
        state: execution_state_to_pb(e.state) as i32,
        started_at: Some(timestamp(e.started_at)),
        ended_at: e.ended_at.map(timestamp),
        exit_code: e.exit_code,
        error: e.error.clone(),
        agent: agent_to_pb(e.agent) as i32,
        model: e.model.clone(),
        session_id: e.session_id.clone(),
        cost_usd: e.cost_usd,
        cost_estimated: e.cost_estimated,
        cost_unknown: e.cost_unknown,
        input_tokens: e.input_tokens,
        output_tokens: e.output_tokens,
        turns: e.turns,
        changed_files: e.changed_files.clone(),
        file_changes: e
            .file_changes
            .iter()
            .map(|f| pb::FileChange {
                path: f.path.clone(),
                added: f.added,
                removed: f.removed,
            })
            .collect(),
        commits: e.commits.clone(),
        summary: e.summary.clone(),
        log_path: e.log_path.clone(),
        attempt: e.attempt,
        permission_denials: e.permission_denials.clone(),
        server_id: e.server_id.clone(),
        agent_choice: agent_choice_to_pb(e.agent_choice) as i32,
        agent_choice_reason: e.agent_choice_reason.clone(),
    }
}

/// An execution as the server sent it, back to the core type (used by the CLI).
pub fn execution_from_pb(e: pb::Execution) -> Result<Execution, String> {
    Ok(Execution {
        id: e.id.parse()?,
        task_id: e.task_id.parse()?,
        attempt: e.attempt,
        state: execution_state_from_pb(e.state)?,
        started_at: e.started_at.as_ref().map(millis).unwrap_or_default(),
        ended_at: e.ended_at.as_ref().map(millis),
        exit_code: e.exit_code,
        error: e.error,
        agent: agent_from_pb(e.agent)?,
        model: e.model,
        session_id: e.session_id,
        cost_usd: e.cost_usd,
        cost_estimated: e.cost_estimated,
        cost_unknown: e.cost_unknown,
        input_tokens: e.input_tokens,
        output_tokens: e.output_tokens,
        turns: e.turns,
        changed_files: e.changed_files,
        file_changes: e
            .file_changes
            .into_iter()
            .map(|f| m::FileChange {
                path: f.path,
                added: f.added,
                removed: f.removed,
            })
            .collect(),
        commits: e.commits,
        summary: e.summary,
        log_path: e.log_path,
        permission_denials: e.permission_denials,
        server_id: e.server_id,
        agent_choice: agent_choice_from_pb(e.agent_choice),
        agent_choice_reason: e.agent_choice_reason,
    })
}

pub fn system_status_to_pb(s: &crate::core::status::SystemStatus) -> pb::GetSystemStatusResponse {
    let check = |c: &crate::core::status::Check| pb::ComponentCheck {
        ok: c.ok,
        detail: c.detail.clone(),
    };
    pb::GetSystemStatusResponse {
        server_version: s.version.clone(),
        executor_enabled: s.executor_enabled,
        max_concurrent: s.max_concurrent as u32,
        running: s.running as u32,
        queued: s.queued,
        queued_auto: s.queued_auto,
        agents: s
            .agents
            .iter()
            .map(|a| pb::AgentStatus {
                agent: agent_to_pb(a.agent) as i32,
                available: a.probe.available,
                command: a.probe.command.clone(),
                detail: a.probe.detail.clone(),
                version: a.probe.version.clone(),
                credentials_ok: a.probe.credentials_ok,
                credentials: a.probe.credentials.clone(),
                running: a.running as u32,
                queued: a.queued,
                max_concurrent: a.max_concurrent as u32,
                rate_limited_until: a.limited_until.map(timestamp),
            })
            .collect(),
        git: Some(check(&s.git)),
        data_dir: Some(check(&s.data_dir)),
        database: Some(check(&s.database)),
        local_model: Some(check(&s.local_model)),
        notifications: Some(check(&s.notifications)),
        isolation: Some(check(&s.isolation)),
        prices: Some(check(&s.prices)),
        cluster: Some(check(&s.cluster)),
        github: s
            .github
            .iter()
            .map(|g| pb::RepositoryCheck {
                project: g.project.clone(),
                repository: g.repo.clone(),
                ok: g.ok,
                detail: g.detail.clone(),
            })
            .collect(),
    }
}

pub fn elaborate_from_pb(req: pb::ElaborateRequest) -> ElaborateRequest {
    ElaborateRequest {
        text: req.text,
        project: req.project,
        agent: agent_name(req.agent),
    }
}

pub fn elaboration_to_pb(e: &Elaboration) -> pb::ElaborateResponse {
    let source = match e.source {
        ElaborateSource::LocalModel => pb::ElaborateSource::LocalModel,
        ElaborateSource::Claude => pb::ElaborateSource::Claude,
        ElaborateSource::Gemini => pb::ElaborateSource::Gemini,
        ElaborateSource::Template => pb::ElaborateSource::Template,
    };
    pb::ElaborateResponse {
        spec: Some(spec_to_pb(&e.spec)),
        source: source as i32,
        model: e.model.clone(),
        notes: e.notes.clone(),
    }
}

/// One watch event on the wire; its cursor is the change's `seq`.
pub fn watch_event_to_pb(event: &WatchEvent) -> pb::WatchTasksResponse {
    use pb::watch_tasks_response::Event;
    let (event, cursor) = match event {
        WatchEvent::Snapshot(task) => (Event::Snapshot(task_to_pb(task)), String::new()),
        WatchEvent::SnapshotEnd { cursor } => {
            (Event::SnapshotEnd(pb::SnapshotEnd {}), cursor.to_string())
        }
        WatchEvent::Heartbeat { cursor } => {
            (Event::Heartbeat(pb::Heartbeat {}), cursor.to_string())
        }
        WatchEvent::Change(published) => {
            let change = &published.change;
            let change_pb = pb::TaskChange {
                task: published.task.as_ref().map(task_to_pb),
                from_state: change.from.map_or(pb::TaskState::Unspecified, state_to_pb) as i32,
                to_state: state_to_pb(change.to) as i32,
                reason: change.reason.clone(),
                changed_at: Some(timestamp(change.at)),
                sequence: change.seq,
            };
            (Event::Change(change_pb), change.seq.to_string())
        }
    };
    pb::WatchTasksResponse {
        event: Some(event),
        cursor,
    }
}

pub fn pruned_to_pb(item: crate::core::review::Pruned) -> pb::PrunedItem {
    use crate::core::review::PrunedKind;
    pb::PrunedItem {
        task_id: item.task_id,
        project: item.project,
        kind: match item.kind {
            PrunedKind::Branch => pb::PrunedKind::Branch,
            PrunedKind::Sandbox => pb::PrunedKind::Sandbox,
        } as i32,
        name: item.name,
        removed: item.removed,
        kept_because: item.kept_because,
    }
}

pub fn branch_diff_to_pb(diff: crate::sandbox::BranchDiff) -> pb::GetTaskDiffResponse {
    use crate::sandbox::FileStatus;
    pb::GetTaskDiffResponse {
        branch: diff.branch,
        base_commit: diff.base_commit,
        head_commit: diff.head_commit,
        truncated: diff.truncated,
        files: diff
            .files
            .into_iter()
            .map(|f| pb::FileDiff {
                path: f.change.path,
                old_path: f.change.renamed_from.unwrap_or_default(),
                status: match f.status {
                    FileStatus::Added => pb::FileDiffStatus::Added,
                    FileStatus::Modified => pb::FileDiffStatus::Modified,
                    FileStatus::Deleted => pb::FileDiffStatus::Deleted,
                    FileStatus::Renamed => pb::FileDiffStatus::Renamed,
                } as i32,
                added: f.change.added,
                removed: f.change.removed,
                binary: f.change.binary,
                patch: f.patch,
                patch_truncated: f.patch_truncated,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::validate::{TaskRules, validate};

    #[test]
    fn a_task_survives_the_round_trip() {
        let rules = TaskRules {
            projects: vec!["demo".into()],
            ..TaskRules::default()
        };
        let mut req = SubmitRequest::default();
        req.spec.instructions = "do it".into();
        req.spec.agent.agent_type = "gemini".into();
        req.spec.priority = "high".into();
        req.spec.tags = vec!["ci".into()];
        req.idempotency_key = "k1".into();
        let task = validate(&req, &rules).unwrap();
        let back = task_from_pb(task_to_pb(&task)).unwrap();
        assert_eq!(back, task);
    }

    #[test]
    fn unknown_enum_numbers_reach_validation_as_text() {
        let spec = pb::TaskSpec {
            agent: Some(pb::AgentSettings {
                r#type: 42,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(spec_from_pb(spec).agent.agent_type, "42");
    }

    #[test]
    fn timestamps_keep_milliseconds() {
        for ms in [0, 1, 999, 1_700_000_000_123, -1] {
            assert_eq!(millis(&timestamp(ms)), ms);
        }
    }
}
