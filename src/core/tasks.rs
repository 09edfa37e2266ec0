//! The task service: submit, read, list and cancel tasks; read executions.
//! Transport adapters (gRPC, the HTTP shim, the CLI) call these methods and
//! nothing below them.

use tracing::{info, warn};

use super::error::{CoreError, CoreResult};
use super::model::{Execution, Id, Page, SubmitRequest, Task, TaskFilter, TaskState, now_millis};
use super::state;
use super::validate::{TaskRules, validate};
use crate::store::{Store, StoreError};

pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 500;

/// How many times a state change is retried when another writer moved the
/// task between our read and our conditional update.
const TRANSITION_RETRIES: usize = 8;

/// A listing request as a client writes it.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub states: Vec<TaskState>,
    pub project: String,
    pub tag: String,
    pub page_size: u32,
    pub page_token: String,
}

#[derive(Clone)]
pub struct TaskService {
    store: Store,
    rules: TaskRules,
}

impl From<StoreError> for CoreError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Closed => CoreError::Unavailable("the server is shutting down".into()),
            other => {
                warn!(error = %other, "store error");
                CoreError::Internal(other.to_string())
            }
        }
    }
}

impl TaskService {
    pub fn new(store: Store, rules: TaskRules) -> Self {
        TaskService { store, rules }
    }

    pub fn rules(&self) -> &TaskRules {
        &self.rules
    }

    /// Validates and stores a task. Returns the task and whether it was
    /// created (false: the idempotency key matched an earlier task).
    pub async fn submit(&self, req: SubmitRequest) -> CoreResult<(Task, bool)> {
        let mut task = validate(&req, &self.rules)?;

        if let Some(key) = &task.idempotency_key
            && let Some(existing) = self.store.find_task_by_idempotency_key(key).await?
        {
            return Ok((existing, false));
        }

        let deps = self.store.get_tasks(&task.depends_on).await?;
        if let Some(missing) = task
            .depends_on
            .iter()
            .find(|id| !deps.iter().any(|d| d.id == **id))
        {
            return Err(CoreError::invalid(
                "spec.depends_on",
                format!("unknown task {missing}"),
            ));
        }
        if let Some(parent) = task.parent_task_id
            && self.store.get_task(parent).await?.is_none()
        {
            return Err(CoreError::invalid(
                "spec.parent_task_id",
                format!("unknown task {parent}"),
            ));
        }

        let ready = deps.iter().all(|d| d.state == TaskState::Completed);
        if ready {
            state::check(task.state, TaskState::Queued)?;
            task.state = TaskState::Queued;
        }

        match self.store.insert_task(task.clone()).await {
            Ok(()) => {
                info!(task_id = %task.id, project = %task.project, state = %task.state, "task submitted");
                Ok((task, true))
            }
            Err(StoreError::Duplicate(_)) => self.resolve_duplicate(&task).await,
            Err(other) => Err(other.into()),
        }
    }

    /// An insert hit a unique key: either a concurrent submit with the same
    /// idempotency key won the race (return its task), or the id is taken.
    async fn resolve_duplicate(&self, task: &Task) -> CoreResult<(Task, bool)> {
        if let Some(key) = &task.idempotency_key
            && let Some(existing) = self.store.find_task_by_idempotency_key(key).await?
        {
            return Ok((existing, false));
        }
        Err(CoreError::AlreadyExists(format!(
            "task {} already exists",
            task.id
        )))
    }

    pub async fn get(&self, id: &str) -> CoreResult<Task> {
        let id = parse_id("id", id)?;
        self.store
            .get_task(id)
            .await?
            .ok_or_else(|| CoreError::not_found("task", id))
    }

    pub async fn list(&self, query: ListQuery) -> CoreResult<Page<Task>> {
        let filter = TaskFilter {
            states: query.states,
            project: non_empty(query.project),
            tag: non_empty(query.tag),
            before: parse_page_token(&query.page_token)?,
            limit: page_limit(query.page_size),
        };
        Ok(self.store.list_tasks(&filter).await?)
    }

    /// Cancels a task in any non-final state.
    pub async fn cancel(&self, id: &str, reason: &str) -> CoreResult<Task> {
        let id = parse_id("id", id)?;
        let reason = match reason.trim() {
            "" => "cancelled by request",
            text => text,
        };
        let task = self.transition(id, TaskState::Cancelled, reason).await?;
        info!(task_id = %id, reason, "task cancelled");
        Ok(task)
    }

    /// Moves a task to `to` if the state machine allows it from the state the
    /// task is in, retrying when another writer got there first.
    pub async fn transition(&self, id: Id, to: TaskState, reason: &str) -> CoreResult<Task> {
        for _ in 0..TRANSITION_RETRIES {
            let mut task = self
                .store
                .get_task(id)
                .await?
                .ok_or_else(|| CoreError::not_found("task", id))?;
            state::check(task.state, to)?;
            let now = now_millis();
            if self
                .store
                .set_task_state(id, task.state, to, reason, now)
                .await?
            {
                task.state = to;
                task.state_reason = reason.to_string();
                task.updated_at = now;
                return Ok(task);
            }
        }
        Err(CoreError::Unavailable(format!(
            "task {id} kept changing state; try again"
        )))
    }

    pub async fn get_execution(&self, id: &str) -> CoreResult<Execution> {
        let id = parse_id("id", id)?;
        self.store
            .get_execution(id)
            .await?
            .ok_or_else(|| CoreError::not_found("execution", id))
    }

    pub async fn list_executions(
        &self,
        task_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> CoreResult<Page<Execution>> {
        let task_id = parse_id("task_id", task_id)?;
        if self.store.get_task(task_id).await?.is_none() {
            return Err(CoreError::not_found("task", task_id));
        }
        let after = parse_page_token(page_token)?;
        Ok(self
            .store
            .list_executions(task_id, after, page_limit(page_size))
            .await?)
    }
}

fn parse_id(field: &str, text: &str) -> CoreResult<Id> {
    if text.trim().is_empty() {
        return Err(CoreError::invalid(field, "is required"));
    }
    text.parse()
        .map_err(|e: String| CoreError::invalid(field, e))
}

fn parse_page_token(token: &str) -> CoreResult<Option<Id>> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .parse()
        .map(Some)
        .map_err(|_| CoreError::invalid("page_token", "is not a token this server returned"))
}

fn page_limit(requested: u32) -> u64 {
    u64::from(match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    })
}

fn non_empty(text: String) -> Option<String> {
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}
