//! The task service: submit, read, list and cancel tasks; read executions.
//! Transport adapters (gRPC, the HTTP shim, the CLI) call these methods and
//! nothing below them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

pub use super::activity::Activity;
use super::bus::ChangeBus;
use super::error::{Checked, CoreError, CoreResult, Violations, WrongState, both};
use super::events::EventSink;
use super::logs::{LogError, LogHub, LogResult, LogSender};
use super::model::{Execution, Id, Page, Question, SubmitRequest, Task, TaskFilter, TaskState};
use super::state;
use super::validate::{
    MAX_ANSWER_BYTES, MAX_REASON_BYTES, TaskRules, check_required_text, check_text, validate,
};
pub use crate::store::InsertCap;
use crate::store::{Store, StoreError, TaskUpdate};

pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 500;

/// Leave to write a task row: the store's `insert_task` and `update_task`
/// take one, and only this module can make one, so `submit` and `apply`
/// are the only writers of task state (the compiler says so, not a
/// convention).
pub struct TaskWrite(());

/// A checked request: a new task, or the one its idempotency key names.
enum Prepared {
    New(Task),
    Existing(Task),
}

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
    logs: Arc<LogHub>,
    activity: Arc<Activity>,
    /// Where sandboxes live, so accepted work's sandbox can be removed.
    sandboxes: Option<crate::sandbox::SandboxConfig>,
    /// Every committed change, in order (`core::bus`).
    bus: Arc<ChangeBus>,
    /// Where notifications are queued, if they are on (fed from the bus).
    events: Option<EventSink>,
    /// Logs are shared through the store: a log this server has no file of
    /// is read from there (`core::shared_logs`).
    shared_logs: bool,
    /// How long a task requeued to resume an agent session (an answer,
    /// review feedback, a restart) waits for the server that has the
    /// session before any server may take it and start afresh.
    session_hold: Duration,
}

/// The default `session_hold`: the default lease.
const SESSION_HOLD: Duration = Duration::from_secs(30);

/// How often the change bus looks for changes other servers wrote (this
/// server's own are published as soon as they commit).
const CHANGE_POLL: Duration = Duration::from_millis(100);

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
    /// The service over `store`, with its change bus (needs a tokio runtime).
    pub fn new(store: Store, rules: TaskRules, logs: Arc<LogHub>, activity: Arc<Activity>) -> Self {
        TaskService {
            bus: ChangeBus::start(store.clone(), CHANGE_POLL),
            store,
            rules,
            logs,
            activity,
            sandboxes: None,
            events: None,
            shared_logs: false,
            session_hold: SESSION_HOLD,
        }
    }

    /// How long a task requeued to resume a session waits for the server
    /// that has it (see `session_hold`).
    pub fn with_session_hold(mut self, hold: Duration) -> Self {
        self.session_hold = hold;
        self
    }

    /// Holds a task about to be queued for `server_id` (which has the
    /// agent session it resumes) for `session_hold` from `at`.
    pub fn hold_for(&self, update: &mut TaskUpdate, server_id: &str) {
        update.lease = Some(crate::store::Lease {
            owner: server_id.to_string(),
            until: update.at + self.session_hold.as_millis() as i64,
        });
    }

    /// Keeps the notifications' sink, for the status report (what feeds
    /// it is `events::forward`, from the bus).
    pub fn with_events(mut self, events: EventSink) -> Self {
        self.events = Some(events);
        self
    }

    /// Where notifications are queued, if they are on.
    pub fn event_sink(&self) -> Option<&EventSink> {
        self.events.as_ref()
    }

    /// Every committed task change, in order.
    pub fn bus(&self) -> &Arc<ChangeBus> {
        &self.bus
    }

    /// Lets accepting a task remove its sandbox.
    pub fn with_sandboxes(mut self, sandboxes: crate::sandbox::SandboxConfig) -> Self {
        self.sandboxes = Some(sandboxes);
        self
    }

    /// Where sandboxes live, when this server keeps them.
    pub fn sandboxes(&self) -> Option<&crate::sandbox::SandboxConfig> {
        self.sandboxes.as_ref()
    }

    /// Serves logs this server has no file of from the store.
    pub fn with_shared_logs(mut self) -> Self {
        self.shared_logs = true;
        self
    }

    /// A subscriber's channel of one execution's events (see `feed`).
    pub(super) fn subscribe(
        &self,
        execution: Id,
        from_offset: u64,
        follow: bool,
    ) -> mpsc::Receiver<LogResult> {
        if !self.shared_logs || self.logs.has_file(execution) {
            return self.logs.subscribe(execution, from_offset, follow);
        }
        let (tx, rx) = LogHub::channel();
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) =
                super::shared_logs::feed(&store, execution, from_offset, follow, &tx).await
            {
                let _ = tx.send(Err(e)).await;
            }
        });
        rx
    }

    /// One execution's events into `tx`: from this server's log file, or,
    /// when another server ran it and logs are shared, from the store.
    pub(super) async fn feed(
        &self,
        execution: Id,
        from_offset: u64,
        follow: bool,
        tx: &LogSender,
    ) -> Result<bool, LogError> {
        if self.shared_logs && !self.logs.has_file(execution) {
            super::shared_logs::feed(&self.store, execution, from_offset, follow, tx).await
        } else {
            self.logs.feed(execution, from_offset, follow, tx).await
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn logs(&self) -> &Arc<LogHub> {
        &self.logs
    }

    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    pub fn rules(&self) -> &TaskRules {
        &self.rules
    }

    /// Validates and stores a task. Returns the task and whether it was
    /// created (false: the idempotency key matched an earlier task).
    pub async fn submit(&self, req: SubmitRequest) -> CoreResult<(Task, bool)> {
        let task = match self.prepare(&req).await? {
            Prepared::Existing(task) => return Ok((task, false)),
            Prepared::New(task) => task,
        };
        match self.store.insert_task(task.clone(), TaskWrite(())).await {
            Ok(()) => Ok(self.submitted(task)),
            Err(StoreError::Duplicate(_)) => self.resolve_duplicate(&task).await,
            Err(other) => Err(other.into()),
        }
    }

    /// Like `submit`, but stores the task only while fewer than `cap.max`
    /// tasks carrying `cap.tag` were made since `cap.since` (cancelled ones
    /// not counted), counted in one step with the insert on every server.
    /// None: the cap was reached and nothing was stored.
    pub async fn submit_capped(
        &self,
        req: SubmitRequest,
        cap: InsertCap,
    ) -> CoreResult<Option<(Task, bool)>> {
        let task = match self.prepare(&req).await? {
            Prepared::Existing(task) => return Ok(Some((task, false))),
            Prepared::New(task) => task,
        };
        match self
            .store
            .insert_task_capped(task.clone(), cap, TaskWrite(()))
            .await
        {
            Ok(true) => Ok(Some(self.submitted(task))),
            Ok(false) => Ok(None),
            Err(StoreError::Duplicate(_)) => self.resolve_duplicate(&task).await.map(Some),
            Err(other) => Err(other.into()),
        }
    }

    /// The task a request makes, checked against what it refers to; or
    /// the earlier task its idempotency key names.
    async fn prepare(&self, req: &SubmitRequest) -> CoreResult<Prepared> {
        let mut task = validate(req, &self.rules)?;

        if let Some(key) = &task.idempotency_key
            && let Some(existing) = self.store.find_task_by_idempotency_key(key).await?
        {
            return Ok(Prepared::Existing(existing));
        }

        // The tasks it names must exist: every one that does not is told.
        let mut found = Violations::default();
        let deps = self.store.get_tasks(&task.depends_on).await?;
        for missing in task
            .depends_on
            .iter()
            .filter(|id| !deps.iter().any(|d| d.id == **id))
        {
            found.add("spec.depends_on", format!("unknown task {missing}"));
        }
        if let Some(parent) = task.parent_task_id
            && self.store.get_task(parent).await?.is_none()
        {
            found.add("spec.parent_task_id", format!("unknown task {parent}"));
        }
        found.into_result()?;

        let ready = deps.iter().all(|d| d.state == TaskState::Completed);
        if ready {
            state::check(task.state, TaskState::Queued)?;
            task.state = TaskState::Queued;
        }
        Ok(Prepared::New(task))
    }

    /// A task was stored: say so and wake the executor.
    fn submitted(&self, task: Task) -> (Task, bool) {
        info!(task_id = %task.id, project = %task.project, state = %task.state, "task submitted");
        self.activity.wake.notify_one();
        (task, true)
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

    /// A task and its pull request, if it has one.
    pub async fn get_with_pull(
        &self,
        id: &str,
    ) -> CoreResult<(Task, Option<super::pulls::PullRecord>)> {
        let task = self.get(id).await?;
        let pull = self.store.get_pull(task.id).await?;
        Ok((task, pull))
    }

    /// The pull requests of these tasks (those that have one).
    pub async fn pulls_of(&self, tasks: &[Task]) -> CoreResult<Vec<super::pulls::PullRecord>> {
        let ids: Vec<Id> = tasks.iter().map(|t| t.id).collect();
        Ok(self.store.pulls_of(&ids).await?)
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
        let (id, ()) = both(
            parse_id("id", id),
            check_text("reason", reason, MAX_REASON_BYTES),
        )?;
        let reason = match reason.trim() {
            "" => "cancelled by request",
            text => text,
        };
        let task = match self.transition(id, TaskState::Cancelled, reason).await {
            Err(CoreError::WrongState(wrong)) => {
                // Cancelling twice is not an error (a retried request, two
                // people): the task as the first cancel left it.
                let task = self.get(&id.to_string()).await?;
                if task.state == TaskState::Cancelled {
                    return Ok(task);
                }
                return Err(CoreError::WrongState(wrong));
            }
            other => other?,
        };
        let was_running = self.activity.stop(id);
        info!(task_id = %id, reason, was_running, "task cancelled");
        // Dependents of a cancelled task fail; let the scheduler see it.
        self.activity.wake.notify_one();
        Ok(task)
    }

    /// Answers a BLOCKED task's question; its next run resumes the agent
    /// session with the answer.
    pub async fn answer(&self, task_id: &str, answer: &str) -> CoreResult<Task> {
        let (id, ()) = both(
            parse_id("task_id", task_id),
            check_required_text("answer", answer, MAX_ANSWER_BYTES),
        )?;
        let input = format!("A person answered your question:\n\n{}", answer.trim());
        let task = self
            .resume_with(id, TaskState::Blocked, TaskState::Queued, "answered", input)
            .await?;
        info!(task_id = %id, "question answered");
        Ok(task)
    }

    /// Accepts a READY task's work.
    pub async fn accept(&self, task_id: &str) -> CoreResult<Task> {
        let id = parse_id("task_id", task_id)?;
        self.complete(id, "accepted").await
    }

    /// A READY task's work is done (accepted, or its pull request merged):
    /// COMPLETED, its sandbox removed.
    pub async fn complete(&self, id: Id, reason: &str) -> CoreResult<Task> {
        let task = self
            .transition_from(id, &[TaskState::Ready], TaskState::Completed, reason)
            .await?;
        if let Some(sandboxes) = &self.sandboxes
            && let Err(e) = crate::sandbox::remove(sandboxes, &id.to_string()).await
        {
            warn!(task_id = %id, error = %e, "cannot remove the accepted task's sandbox");
        }
        info!(task_id = %id, reason, "work completed");
        Ok(task)
    }

    /// Sends a READY task's work back with feedback; its next run resumes the
    /// agent session with the feedback.
    pub async fn reject(&self, task_id: &str, feedback: &str) -> CoreResult<Task> {
        let (id, ()) = both(
            parse_id("task_id", task_id),
            check_required_text("feedback", feedback, MAX_ANSWER_BYTES),
        )?;
        let input = format!(
            "A reviewer sent your work back. Address this feedback:\n\n{}",
            feedback.trim()
        );
        let task = self
            .resume_with(
                id,
                TaskState::Ready,
                TaskState::Queued,
                "sent back by review",
                input,
            )
            .await?;
        info!(task_id = %id, "work rejected");
        Ok(task)
    }

    /// Sends a READY task back to its agent with `input` (feedback from a
    /// pull request), said as `reason`; like `reject`.
    pub async fn send_back(&self, id: Id, reason: &str, input: String) -> CoreResult<Task> {
        self.resume_with(id, TaskState::Ready, TaskState::Queued, reason, input)
            .await
    }

    /// Moves a READY task to BLOCKED with a question for a person (a pull
    /// request's automatic resumes ran out); answering resumes it.
    pub async fn ask(&self, id: Id, reason: &str, question: Question) -> CoreResult<Task> {
        let mut update = TaskUpdate::new(id, TaskState::Ready, TaskState::Blocked, reason);
        update.question = Some(Some(question));
        if !self.apply(update).await? {
            return Err(CoreError::FailedPrecondition(format!(
                "task {id} is no longer READY"
            )));
        }
        self.get(&id.to_string()).await
    }

    /// `from` → `to` (checked by the state machine), leaving `input` for the
    /// next run and clearing any question.
    async fn resume_with(
        &self,
        id: Id,
        from: TaskState,
        to: TaskState,
        reason: &str,
        input: String,
    ) -> CoreResult<Task> {
        let mut task = self
            .store
            .get_task(id)
            .await?
            .ok_or_else(|| CoreError::not_found("task", id))?;
        if task.state != from {
            return Err(CoreError::WrongState(WrongState {
                task_id: id.to_string(),
                current: task.state,
                wanted: vec![from],
                message: format!(
                    "task {id} is {}, not {}",
                    task.state.as_str().to_uppercase(),
                    from.as_str().to_uppercase()
                ),
            }));
        }
        let mut update = TaskUpdate::new(id, from, to, reason);
        update.question = Some(None);
        update.pending_input = Some(input.clone());
        // The next run resumes the agent session where it lives: the
        // server that ran it gets the task first.
        if let Some(last) = self.store.latest_execution(id).await?
            && !last.session_id.is_empty()
            && !last.server_id.is_empty()
        {
            self.hold_for(&mut update, &last.server_id);
        }
        let at = update.at;
        if !self.apply(update).await? {
            return Err(CoreError::Unavailable(format!(
                "task {id} changed state meanwhile; try again"
            )));
        }
        task.state = to;
        task.state_reason = reason.to_string();
        task.question = None;
        task.pending_input = input;
        task.updated_at = at;
        self.activity.wake.notify_one();
        Ok(task)
    }

    /// Moves a task to `to` if the state machine allows it from the state the
    /// task is in, retrying when another writer got there first.
    pub async fn transition(&self, id: Id, to: TaskState, reason: &str) -> CoreResult<Task> {
        self.transition_from(id, &state::sources(to), to, reason)
            .await
    }

    /// [`Self::transition`], only from one of the states `from` (a request
    /// that names what it acts on: accept wants READY work, not a run that
    /// the state machine may also complete); another is `WrongState`.
    async fn transition_from(
        &self,
        id: Id,
        from: &[TaskState],
        to: TaskState,
        reason: &str,
    ) -> CoreResult<Task> {
        for _ in 0..TRANSITION_RETRIES {
            let mut task = self
                .store
                .get_task(id)
                .await?
                .ok_or_else(|| CoreError::not_found("task", id))?;
            if !from.contains(&task.state) {
                let message = match state::check(task.state, to) {
                    Err(why) => why.to_string(),
                    Ok(()) => format!(
                        "task {id} is {}, not {}",
                        task.state.as_str().to_uppercase(),
                        from.iter()
                            .map(|s| s.as_str().to_uppercase())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                };
                return Err(CoreError::WrongState(WrongState {
                    task_id: id.to_string(),
                    current: task.state,
                    wanted: from.to_vec(),
                    message,
                }));
            }
            let update = TaskUpdate::new(id, task.state, to, reason);
            let at = update.at;
            if self.apply(update).await? {
                task.state = to;
                task.state_reason = reason.to_string();
                task.updated_at = at;
                return Ok(task);
            }
        }
        Err(CoreError::Unavailable(format!(
            "task {id} kept changing state; try again"
        )))
    }

    /// Writes one state change: checked by the state machine, applied as a
    /// compare-and-set (false, changing nothing, when another writer moved
    /// the task first), and logged in the same commit, from where the
    /// change bus announces it. Every task state change goes through here:
    /// the executor, recovery, cancel, answer, accept, reject and the
    /// blocked-task expiry.
    pub async fn apply(&self, update: TaskUpdate) -> CoreResult<bool> {
        state::check(update.from, update.to)?;
        Ok(self.store.update_task(update, TaskWrite(())).await?)
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

pub(super) fn parse_id(field: &str, text: &str) -> Checked<Id> {
    if text.trim().is_empty() {
        return Err(Violations::one(field, "is required"));
    }
    text.parse().map_err(|e: String| Violations::one(field, e))
}

fn parse_page_token(token: &str) -> Checked<Option<Id>> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .parse()
        .map(Some)
        .map_err(|_| Violations::one("page_token", "is not a token this server returned"))
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
