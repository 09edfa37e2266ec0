//! Rows to core types and back. A row that does not parse is reported as
//! corrupt, never turned into a default.

use std::time::Duration;

use sea_orm::ActiveValue::Set;

use super::entity::{execution, pull_request, task, task_change};
use super::{StoreError, StoreResult};
use crate::core::codehost::PullState;
use crate::core::model::{AgentSettings, Execution, Id, Priority, Task};
use crate::core::pulls::PullRecord;

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain lists always serialize")
}

fn parse_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

pub(super) fn parse<T: std::str::FromStr<Err = String>>(
    column: &str,
    text: &str,
) -> StoreResult<T> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn count(n: u32) -> i64 {
    i64::from(n)
}

fn uncount(column: &str, n: i64) -> StoreResult<u32> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("{column}: {n} is out of range")))
}

pub fn task_to_row(t: &Task) -> task::ActiveModel {
    task::ActiveModel {
        id: Set(t.id.to_string()),
        name: Set(t.name.clone()),
        instructions: Set(t.instructions.clone()),
        project: Set(t.project.clone()),
        agent_type: Set(t.agent.agent_type.as_str().to_string()),
        agent_model: Set(t.agent.model.clone()),
        allowed_tools: Set(json(&t.agent.allowed_tools)),
        max_budget_usd: Set(t.agent.max_budget_usd),
        max_turns: Set(count(t.agent.max_turns)),
        timeout_secs: Set(t.timeout.as_secs() as i64),
        priority: Set(t.priority.rank()),
        tags: Set(json(&t.tags)),
        depends_on: Set(json(&t.depends_on)),
        parent_task_id: Set(t.parent_task_id.map(|id| id.to_string())),
        max_attempts: Set(count(t.max_attempts)),
        review_required: Set(t.review_required),
        base_ref: Set(t.base_ref.clone()),
        start_from: Set(t.start_from.as_str().to_string()),
        pull_requests: Set(t.pull_requests.as_str().to_string()),
        idempotency_key: Set(t.idempotency_key.clone()),
        state: Set(t.state.as_str().to_string()),
        state_reason: Set(t.state_reason.clone()),
        summary: Set(t.summary.clone()),
        attempts: Set(count(t.attempts)),
        run_after: Set(t.run_after),
        question: Set(t.question.as_ref().map(json).unwrap_or_default()),
        pending_input: Set(t.pending_input.clone()),
        created_at: Set(t.created_at),
        updated_at: Set(t.updated_at),
        owner: Set(String::new()),
        lease_until: Set(0),
        running_agent: Set(String::new()),
    }
}

pub fn task_from_row(r: task::Model) -> StoreResult<Task> {
    Ok(Task {
        id: parse("task.id", &r.id)?,
        name: r.name,
        instructions: r.instructions,
        project: r.project,
        agent: AgentSettings {
            agent_type: parse("task.agent_type", &r.agent_type)?,
            model: r.agent_model,
            allowed_tools: parse_json("task.allowed_tools", &r.allowed_tools)?,
            max_budget_usd: r.max_budget_usd,
            max_turns: uncount("task.max_turns", r.max_turns)?,
        },
        timeout: Duration::from_secs(r.timeout_secs.max(0) as u64),
        priority: Priority::from_rank(r.priority)
            .ok_or_else(|| StoreError::Corrupt(format!("task.priority: {}", r.priority)))?,
        tags: parse_json("task.tags", &r.tags)?,
        depends_on: parse_json("task.depends_on", &r.depends_on)?,
        parent_task_id: r
            .parent_task_id
            .as_deref()
            .map(|id| parse::<Id>("task.parent_task_id", id))
            .transpose()?,
        max_attempts: uncount("task.max_attempts", r.max_attempts)?,
        review_required: r.review_required,
        base_ref: r.base_ref,
        start_from: parse("task.start_from", &r.start_from)?,
        pull_requests: parse("task.pull_requests", &r.pull_requests)?,
        idempotency_key: r.idempotency_key,
        state: parse("task.state", &r.state)?,
        state_reason: r.state_reason,
        summary: r.summary,
        attempts: uncount("task.attempts", r.attempts)?,
        run_after: r.run_after,
        question: if r.question.is_empty() {
            None
        } else {
            Some(parse_json("task.question", &r.question)?)
        },
        pending_input: r.pending_input,
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}

pub fn execution_to_row(e: &Execution) -> execution::ActiveModel {
    execution::ActiveModel {
        id: Set(e.id.to_string()),
        task_id: Set(e.task_id.to_string()),
        attempt: Set(count(e.attempt)),
        state: Set(e.state.as_str().to_string()),
        started_at: Set(e.started_at),
        ended_at: Set(e.ended_at),
        exit_code: Set(e.exit_code),
        error: Set(e.error.clone()),
        agent: Set(e.agent.as_str().to_string()),
        model: Set(e.model.clone()),
        session_id: Set(e.session_id.clone()),
        cost_usd: Set(e.cost_usd),
        cost_estimated: Set(e.cost_estimated),
        cost_unknown: Set(e.cost_unknown),
        input_tokens: Set(e.input_tokens as i64),
        output_tokens: Set(e.output_tokens as i64),
        turns: Set(count(e.turns)),
        changed_files: Set(json(&e.changed_files)),
        file_changes: Set(json(&e.file_changes)),
        commits: Set(json(&e.commits)),
        summary: Set(e.summary.clone()),
        log_path: Set(e.log_path.clone()),
        permission_denials: Set(json(&e.permission_denials)),
        server_id: Set(e.server_id.clone()),
        agent_choice: Set(e.agent_choice.as_str().to_string()),
        agent_choice_reason: Set(e.agent_choice_reason.clone()),
    }
}

pub fn execution_from_row(r: execution::Model) -> StoreResult<Execution> {
    Ok(Execution {
        id: parse("execution.id", &r.id)?,
        task_id: parse("execution.task_id", &r.task_id)?,
        attempt: uncount("execution.attempt", r.attempt)?,
        state: parse("execution.state", &r.state)?,
        started_at: r.started_at,
        ended_at: r.ended_at,
        exit_code: r.exit_code,
        error: r.error,
        agent: parse("execution.agent", &r.agent)?,
        model: r.model,
        session_id: r.session_id,
        cost_usd: r.cost_usd,
        cost_estimated: r.cost_estimated,
        cost_unknown: r.cost_unknown,
        input_tokens: r.input_tokens.max(0) as u64,
        output_tokens: r.output_tokens.max(0) as u64,
        turns: uncount("execution.turns", r.turns)?,
        changed_files: parse_json("execution.changed_files", &r.changed_files)?,
        file_changes: parse_json("execution.file_changes", &r.file_changes)?,
        commits: parse_json("execution.commits", &r.commits)?,
        summary: r.summary,
        log_path: r.log_path,
        permission_denials: parse_json("execution.permission_denials", &r.permission_denials)?,
        server_id: r.server_id,
        agent_choice: parse("execution.agent_choice", &r.agent_choice)?,
        agent_choice_reason: r.agent_choice_reason,
    })
}

pub fn change_from_row(row: task_change::Model) -> StoreResult<crate::core::bus::TaskChange> {
    Ok(crate::core::bus::TaskChange {
        seq: u64::try_from(row.seq)
            .map_err(|_| StoreError::Corrupt(format!("task_change.seq: {}", row.seq)))?,
        task_id: parse("task_change.task_id", &row.task_id)?,
        from: match row.from_state.as_str() {
            "" => None,
            state => Some(parse("task_change.from_state", state)?),
        },
        to: parse("task_change.to_state", &row.to_state)?,
        reason: row.reason,
        at: row.at,
        origin: row.origin,
    })
}

pub fn pull_to_row(p: &PullRecord) -> pull_request::ActiveModel {
    pull_request::ActiveModel {
        task_id: Set(p.task_id.to_string()),
        repository: Set(p.repository.clone()),
        number: Set(p.number as i64),
        url: Set(p.url.clone()),
        state: Set(p.state.as_str().to_string()),
        head_ref: Set(p.head_ref.clone()),
        head_sha: Set(p.head_sha.clone()),
        base_ref: Set(p.base_ref.clone()),
        resumes: Set(count(p.resumes)),
        opened_at: Set(p.opened_at),
        updated_at: Set(p.updated_at),
    }
}

pub fn pull_from_row(r: pull_request::Model) -> StoreResult<PullRecord> {
    Ok(PullRecord {
        task_id: parse("pull_request.task_id", &r.task_id)?,
        repository: r.repository,
        number: u64::try_from(r.number)
            .map_err(|_| StoreError::Corrupt(format!("pull_request.number: {}", r.number)))?,
        url: r.url,
        state: PullState::parse(&r.state)
            .ok_or_else(|| StoreError::Corrupt(format!("pull_request.state: {}", r.state)))?,
        head_ref: r.head_ref,
        head_sha: r.head_sha,
        base_ref: r.base_ref,
        resumes: uncount("pull_request.resumes", r.resumes)?,
        opened_at: r.opened_at,
        updated_at: r.updated_at,
    })
}
