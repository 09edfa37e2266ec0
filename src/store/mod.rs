//! The task store: sea-orm over embedded SQLite (default) or PostgreSQL.
//!
//! Reads go through a small pool; every write goes through one batching
//! writer (`writer.rs`), so bursts of writes share a transaction instead of
//! contending for SQLite's single write lock. Every function takes and returns
//! core types; no sea-orm type leaves this module.

mod convert;
mod entity;
mod migration;
mod pulls;
mod writer;

use std::path::Path;
use std::time::Duration;

use sea_orm::sea_query::Query;
use sea_orm::{
    ColumnTrait, Condition, ConnectOptions, Database, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use sea_orm_migration::MigratorTrait;

use crate::core::bus::TaskChange;
use crate::core::model::{
    AgentType, Execution, ExecutionState, Id, Page, Question, Task, TaskFilter, TaskState,
    UnixMillis,
};
use crate::core::tasks::TaskWrite;
use entity::{agent_mark, execution, log_line, server, task, task_change, task_tag};
use writer::{WriteOp, Writer};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key (id or idempotency key) is already taken.
    #[error("duplicate key: {0}")]
    Duplicate(String),
    /// A stored row could not be read back as a core type.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Db(String),
    /// The writer has stopped (the server is shutting down).
    #[error("the store is closed")]
    Closed,
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        match err.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(msg)) => StoreError::Duplicate(msg),
            _ => StoreError::Db(err.to_string()),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A cap on inserting a task: at most `max` tasks carrying `tag`, made at
/// or after `since` and not cancelled. Counted and inserted in one step
/// (see `Store::insert_task_capped`).
#[derive(Clone, Debug)]
pub struct InsertCap {
    pub tag: String,
    pub since: UnixMillis,
    pub max: u64,
}

/// A conditional change to a task: applied only if it is still in `from`.
#[derive(Clone, Debug)]
pub struct TaskUpdate {
    pub id: Id,
    pub from: TaskState,
    pub to: TaskState,
    pub reason: String,
    pub at: UnixMillis,
    pub attempts: Option<u32>,
    pub run_after: Option<UnixMillis>,
    pub summary: Option<String>,
    /// `Some(None)` clears the question.
    pub question: Option<Option<Question>>,
    pub pending_input: Option<String>,
    /// Take (or hand back, with an empty owner) the task's lease.
    pub lease: Option<Lease>,
    /// Apply only if this server holds the task: a server whose lease was
    /// taken over must not overwrite what the new holder writes.
    pub if_owner: Option<String>,
    /// Apply only if the lease ran out before this time (taking over a
    /// task from a server that stopped renewing it).
    pub if_lease_before: Option<UnixMillis>,
    /// The agent a claim runs on, recorded on the task; with a cluster
    /// limit, applied only while fewer attempts of that agent run on all
    /// servers together (checked under a lock, so claims never race past it).
    pub agent_slot: Option<AgentSlot>,
    /// Apply only if the task is not held for another server than this
    /// one (a queued task whose agent session is on the server holding it
    /// waits for that server until `lease_until`), or that hold ran out.
    pub if_free_for: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSlot {
    pub agent: AgentType,
    pub cluster_limit: Option<usize>,
}

/// A server's claim on a running task, renewed while the agent runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub until: UnixMillis,
}

impl TaskUpdate {
    pub fn new(id: Id, from: TaskState, to: TaskState, reason: &str) -> Self {
        TaskUpdate {
            id,
            from,
            to,
            reason: reason.to_string(),
            at: crate::core::model::now_millis(),
            attempts: None,
            run_after: None,
            summary: None,
            question: None,
            pending_input: None,
            lease: None,
            if_owner: None,
            if_lease_before: None,
            agent_slot: None,
            if_free_for: None,
        }
    }
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    reader: DatabaseConnection,
    writer: Writer,
    description: String,
    /// This instance's name in the change log (fresh at every open).
    origin: std::sync::Arc<str>,
    /// Counts the writer's commits that wrote the change log.
    commits: tokio::sync::watch::Receiver<u64>,
}

impl Store {
    /// Opens the embedded SQLite database in `data_dir` (created if missing).
    pub async fn open_sqlite(data_dir: &Path) -> StoreResult<Store> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Db(format!("cannot create {}: {e}", data_dir.display())))?;
        let path = data_dir.join("claudomator.db");
        Store::open(&format!("sqlite://{}?mode=rwc", path.display())).await
    }

    /// Opens a database by URL (`sqlite://…` or `postgres://…`) and brings its
    /// schema up to date.
    pub async fn open(url: &str) -> StoreResult<Store> {
        let is_sqlite = url.starts_with("sqlite:");
        let writer_db = connect(url, 1).await?;
        migration::Migrator::up(&writer_db, None).await?;
        let reader = connect(url, if is_sqlite { 4 } else { 8 }).await?;
        let origin = Id::new().to_string();
        let (writer, commits) = Writer::spawn(writer_db, origin.clone());
        Ok(Store {
            reader,
            writer,
            description: describe(url),
            origin: origin.into(),
            commits,
        })
    }

    /// This instance's name on the change-log rows it writes.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Changes (counts up) after each commit of this instance that wrote
    /// the change log.
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.clone()
    }

    /// Up to `limit` changes of the log after `after`, in order.
    pub async fn changes_after(&self, after: u64, limit: u64) -> StoreResult<Vec<TaskChange>> {
        task_change::Entity::find()
            .filter(task_change::Column::Seq.gt(after as i64))
            .order_by_asc(task_change::Column::Seq)
            .limit(limit)
            .all(&self.reader)
            .await?
            .into_iter()
            .map(convert::change_from_row)
            .collect()
    }

    /// The first and last `seq` the change log holds, if any.
    pub async fn change_span(&self) -> StoreResult<Option<(u64, u64)>> {
        let span: Option<(Option<i64>, Option<i64>)> = task_change::Entity::find()
            .select_only()
            .column_as(task_change::Column::Seq.min(), "min")
            .column_as(task_change::Column::Seq.max(), "max")
            .into_tuple()
            .one(&self.reader)
            .await?;
        Ok(match span {
            Some((Some(min), Some(max))) => Some((min as u64, max as u64)),
            _ => None,
        })
    }

    /// Drops change-log rows older than `before`, keeping the newest of
    /// them (where the kept log starts). Returns how many went.
    pub async fn prune_changes(&self, before: UnixMillis) -> StoreResult<u64> {
        self.writer.write(WriteOp::PruneChanges { before }).await
    }

    /// The database, for the start-up log line (no password).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Stores a new task and its tags. Only `TaskService::submit` can
    /// call it (it alone makes a `TaskWrite`).
    pub async fn insert_task(&self, task: Task, _: TaskWrite) -> StoreResult<()> {
        self.writer
            .write(WriteOp::InsertTask(Box::new(task)))
            .await?;
        Ok(())
    }

    /// Stores a new task unless `cap` is reached; true when stored. The
    /// count and the insert are one step on every server: the writer counts
    /// inside the insert's transaction, after the change-log lock every
    /// task insert takes first (PostgreSQL; SQLite has one writer).
    pub async fn insert_task_capped(
        &self,
        task: Task,
        cap: InsertCap,
        _: TaskWrite,
    ) -> StoreResult<bool> {
        let inserted = self
            .writer
            .write(WriteOp::InsertTaskCapped(Box::new(task), cap))
            .await?;
        Ok(inserted > 0)
    }

    /// Applies the update if the task is still in `update.from`. Returns
    /// false, changing nothing, when another writer moved it first. The core
    /// calls it only through `TaskService::apply`, which checks the move and
    /// announces it (it alone makes a `TaskWrite`).
    pub async fn update_task(&self, update: TaskUpdate, _: TaskWrite) -> StoreResult<bool> {
        let changed = self
            .writer
            .write(WriteOp::UpdateTask(Box::new(update)))
            .await?;
        Ok(changed > 0)
    }

    /// Queued tasks for one of `agents` (as the task names it: `auto`
    /// included only when listed) whose backoff has passed and that are not
    /// held for another server, in the order they should run: high priority
    /// first, then oldest first. The scheduler lists only the agents that
    /// can take work now, so a backlog of an agent at its limit never hides
    /// the tasks of another behind it.
    pub async fn runnable_tasks(
        &self,
        now: UnixMillis,
        limit: u64,
        server_id: &str,
        agents: &[AgentType],
    ) -> StoreResult<Vec<Task>> {
        if agents.is_empty() {
            return Ok(Vec::new());
        }
        task::Entity::find()
            .filter(task::Column::State.eq(TaskState::Queued.as_str()))
            .filter(task::Column::AgentType.is_in(agents.iter().map(|a| a.as_str())))
            .filter(task::Column::RunAfter.lte(now))
            .filter(free_for(server_id, now))
            .order_by_desc(task::Column::Priority)
            .order_by_asc(task::Column::Id)
            .limit(limit)
            .all(&self.reader)
            .await?
            .into_iter()
            .map(convert::task_from_row)
            .collect()
    }

    /// How many attempts of each agent run now on all servers together
    /// (the count a claim's cluster limit is checked against).
    pub async fn running_by_agent(&self) -> StoreResult<Vec<(AgentType, u64)>> {
        let rows: Vec<(String, i64)> = task::Entity::find()
            .select_only()
            .column(task::Column::RunningAgent)
            .column_as(task::Column::Id.count(), "n")
            .filter(task::Column::State.eq(TaskState::Running.as_str()))
            .filter(task::Column::RunningAgent.ne(""))
            .group_by(task::Column::RunningAgent)
            .into_tuple()
            .all(&self.reader)
            .await?;
        rows.into_iter()
            .map(|(agent, n)| {
                Ok((
                    convert::parse("task.running_agent", &agent)?,
                    n.max(0) as u64,
                ))
            })
            .collect()
    }

    /// Extends `owner`'s lease to `until` on those of `ids` it still holds,
    /// and returns those: a task missing from the answer was cancelled,
    /// finished or taken over by another server meanwhile.
    pub async fn renew_leases(
        &self,
        owner: &str,
        until: UnixMillis,
        ids: &[Id],
    ) -> StoreResult<Vec<Id>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = ids.iter().map(Id::to_string).collect();
        self.writer
            .write(WriteOp::RenewLeases {
                owner: owner.to_string(),
                until,
                ids: ids.clone(),
            })
            .await?;
        let held: Vec<String> = task::Entity::find()
            .select_only()
            .column(task::Column::Id)
            .filter(task::Column::Owner.eq(owner))
            .filter(task::Column::State.eq(TaskState::Running.as_str()))
            .filter(task::Column::Id.is_in(ids))
            .into_tuple()
            .all(&self.reader)
            .await?;
        held.iter()
            .map(|id| convert::parse("task.id", id))
            .collect()
    }

    /// Moves a running task `owner` holds to `slot.agent` (an `auto` task
    /// the model re-routed), if that agent's cluster limit has room; false
    /// when it has none or the task is no longer `owner`'s.
    pub async fn move_agent_slot(
        &self,
        id: Id,
        owner: &str,
        slot: &AgentSlot,
    ) -> StoreResult<bool> {
        let moved = self
            .writer
            .write(WriteOp::MoveAgentSlot {
                id: id.to_string(),
                owner: owner.to_string(),
                agent: slot.agent.as_str().to_string(),
                cluster_limit: slot.cluster_limit,
            })
            .await?;
        Ok(moved == 1)
    }

    /// Shares log lines (execution, offset, line) through the database.
    pub async fn insert_log_lines(&self, lines: Vec<(Id, u64, String)>) -> StoreResult<()> {
        let rows = lines
            .into_iter()
            .map(|(id, offset, line)| (id.to_string(), offset as i64, line))
            .collect();
        self.writer.write(WriteOp::InsertLogLines(rows)).await?;
        Ok(())
    }

    /// Up to `limit` shared log lines of an execution from `from_offset`
    /// on, in order, with their offsets.
    pub async fn log_lines(
        &self,
        execution: Id,
        from_offset: u64,
        limit: u64,
    ) -> StoreResult<Vec<(u64, String)>> {
        Ok(log_line::Entity::find()
            .select_only()
            .column(log_line::Column::Offset)
            .column(log_line::Column::Line)
            .filter(log_line::Column::ExecutionId.eq(execution.to_string()))
            .filter(log_line::Column::Offset.gte(from_offset as i64))
            .order_by_asc(log_line::Column::Offset)
            .limit(limit)
            .into_tuple::<(i64, String)>()
            .all(&self.reader)
            .await?
            .into_iter()
            .map(|(offset, line)| (offset.max(0) as u64, line))
            .collect())
    }

    /// Says which agents this server can run (None: it is leaving), so
    /// the others know what it takes.
    pub async fn announce_server(
        &self,
        id: &str,
        agents: Option<&[AgentType]>,
        at: UnixMillis,
    ) -> StoreResult<()> {
        let agents = agents.map(|agents| {
            agents
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(",")
        });
        self.writer
            .write(WriteOp::AnnounceServer {
                id: id.to_string(),
                agents,
                at,
            })
            .await?;
        Ok(())
    }

    /// The servers that announced themselves since `since`, by id, with
    /// the agents each can run.
    pub async fn servers_seen_since(
        &self,
        since: UnixMillis,
    ) -> StoreResult<Vec<(String, Vec<AgentType>)>> {
        let rows = server::Entity::find()
            .filter(server::Column::SeenAt.gte(since))
            .order_by_asc(server::Column::Id)
            .all(&self.reader)
            .await?;
        rows.into_iter()
            .map(|row| {
                let agents = row
                    .agents
                    .split(',')
                    .filter(|name| !name.is_empty())
                    .map(|name| convert::parse("server.agents", name))
                    .collect::<StoreResult<Vec<AgentType>>>()?;
                Ok((row.id, agents))
            })
            .collect()
    }

    /// Sets an agent aside until `until` for every server (a later mark
    /// already there stands).
    pub async fn mark_agent(&self, agent: AgentType, until: UnixMillis) -> StoreResult<()> {
        self.writer
            .write(WriteOp::MarkAgent {
                agent: agent.as_str().to_string(),
                until,
            })
            .await?;
        Ok(())
    }

    /// Agents set aside past `now`, by any server.
    pub async fn agent_marks(&self, now: UnixMillis) -> StoreResult<Vec<(AgentType, UnixMillis)>> {
        agent_mark::Entity::find()
            .filter(agent_mark::Column::LimitedUntil.gt(now))
            .all(&self.reader)
            .await?
            .into_iter()
            .map(|row| {
                Ok((
                    convert::parse("agent_mark.agent", &row.agent)?,
                    row.limited_until,
                ))
            })
            .collect()
    }

    /// RUNNING tasks nobody alive holds, with the owner they were left
    /// with: those whose lease ran out (their server died), and when
    /// `include_owner` is given, also that server's own and unowned ones
    /// (a restart reclaims what it held before it died).
    pub async fn orphaned_tasks(
        &self,
        now: UnixMillis,
        include_owner: Option<&str>,
    ) -> StoreResult<Vec<(Task, String)>> {
        let mut held_by_nobody = Condition::any().add(task::Column::LeaseUntil.lt(now));
        if let Some(owner) = include_owner {
            held_by_nobody = held_by_nobody
                .add(task::Column::Owner.eq(owner))
                .add(task::Column::Owner.eq(""));
        }
        task::Entity::find()
            .filter(task::Column::State.eq(TaskState::Running.as_str()))
            .filter(held_by_nobody)
            .order_by_asc(task::Column::Id)
            .all(&self.reader)
            .await?
            .into_iter()
            .map(|row| {
                let owner = row.owner.clone();
                convert::task_from_row(row).map(|task| (task, owner))
            })
            .collect()
    }

    /// A task's executions in one state, oldest first.
    pub async fn task_executions_in_state(
        &self,
        task_id: Id,
        state: ExecutionState,
    ) -> StoreResult<Vec<Execution>> {
        execution::Entity::find()
            .filter(execution::Column::TaskId.eq(task_id.to_string()))
            .filter(execution::Column::State.eq(state.as_str()))
            .order_by_asc(execution::Column::Id)
            .all(&self.reader)
            .await?
            .into_iter()
            .map(convert::execution_from_row)
            .collect()
    }

    /// Tasks in one state, oldest first.
    pub async fn tasks_in_state(&self, state: TaskState, limit: u64) -> StoreResult<Vec<Task>> {
        task::Entity::find()
            .filter(task::Column::State.eq(state.as_str()))
            .order_by_asc(task::Column::Id)
            .limit(limit)
            .all(&self.reader)
            .await?
            .into_iter()
            .map(convert::task_from_row)
            .collect()
    }

    /// How many tasks in `state` name each agent type (as stored: `auto`,
    /// `claude`, …).
    pub async fn count_by_agent(&self, state: TaskState) -> StoreResult<Vec<(String, i64)>> {
        Ok(task::Entity::find()
            .select_only()
            .column(task::Column::AgentType)
            .column_as(task::Column::Id.count(), "n")
            .filter(task::Column::State.eq(state.as_str()))
            .group_by(task::Column::AgentType)
            .into_tuple::<(String, i64)>()
            .all(&self.reader)
            .await?)
    }

    /// The agents and models of executions whose cost is unknown, each
    /// pair once (`doctor` names those the price table still lacks).
    pub async fn unknown_cost_models(&self) -> StoreResult<Vec<(AgentType, String)>> {
        let rows = execution::Entity::find()
            .select_only()
            .column(execution::Column::Agent)
            .column(execution::Column::Model)
            .filter(execution::Column::CostUnknown.eq(true))
            .distinct()
            .into_tuple::<(String, String)>()
            .all(&self.reader)
            .await?;
        rows.into_iter()
            .map(|(agent, model)| Ok((convert::parse("execution.agent", &agent)?, model)))
            .collect()
    }

    /// The executions of a task that ran in one agent session.
    pub async fn executions_of_session(
        &self,
        task_id: Id,
        session_id: &str,
    ) -> StoreResult<Vec<Execution>> {
        execution::Entity::find()
            .filter(execution::Column::TaskId.eq(task_id.to_string()))
            .filter(execution::Column::SessionId.eq(session_id))
            .order_by_asc(execution::Column::Id)
            .all(&self.reader)
            .await?
            .into_iter()
            .map(convert::execution_from_row)
            .collect()
    }

    /// The most recent execution of a task, if any.
    pub async fn latest_execution(&self, task_id: Id) -> StoreResult<Option<Execution>> {
        execution::Entity::find()
            .filter(execution::Column::TaskId.eq(task_id.to_string()))
            .order_by_desc(execution::Column::Id)
            .one(&self.reader)
            .await?
            .map(convert::execution_from_row)
            .transpose()
    }

    /// Inserts an execution, or replaces it when its id exists.
    pub async fn save_execution(&self, execution: Execution) -> StoreResult<()> {
        self.writer
            .write(WriteOp::SaveExecution(Box::new(execution)))
            .await?;
        Ok(())
    }

    pub async fn get_task(&self, id: Id) -> StoreResult<Option<Task>> {
        task::Entity::find_by_id(id.to_string())
            .one(&self.reader)
            .await?
            .map(convert::task_from_row)
            .transpose()
    }

    pub async fn find_task_by_idempotency_key(&self, key: &str) -> StoreResult<Option<Task>> {
        task::Entity::find()
            .filter(task::Column::IdempotencyKey.eq(key))
            .one(&self.reader)
            .await?
            .map(convert::task_from_row)
            .transpose()
    }

    /// The tasks with these ids that exist, in no particular order.
    pub async fn get_tasks(&self, ids: &[Id]) -> StoreResult<Vec<Task>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        task::Entity::find()
            .filter(task::Column::Id.is_in(ids.iter().map(Id::to_string)))
            .all(&self.reader)
            .await?
            .into_iter()
            .map(convert::task_from_row)
            .collect()
    }

    /// Tasks matching the filter, newest first.
    pub async fn list_tasks(&self, filter: &TaskFilter) -> StoreResult<Page<Task>> {
        list_tasks_on(&self.reader, filter).await
    }

    /// A watch's snapshot: the tasks named by `ids` (when there are any)
    /// or else every task matching `filter` (all its pages), and the change
    /// log's last `seq`, in one read, so that the tasks are exactly as that
    /// change left them: every change after the `seq` is newer than the
    /// snapshot, every one up to it is in it. (Writers of the log commit in
    /// `seq` order; PostgreSQL reads at REPEATABLE READ for one snapshot
    /// across the statements, SQLite's read transaction is one already.)
    pub async fn snapshot_tasks(
        &self,
        ids: &[Id],
        filter: &TaskFilter,
    ) -> StoreResult<(Vec<Task>, u64)> {
        use sea_orm::{AccessMode, DbBackend, IsolationLevel, TransactionTrait};
        let isolation = (self.reader.get_database_backend() == DbBackend::Postgres)
            .then_some(IsolationLevel::RepeatableRead);
        let txn = self
            .reader
            .begin_with_config(isolation, Some(AccessMode::ReadOnly))
            .await?;
        // The log's end first: in SQLite the first read fixes what the
        // transaction sees.
        let seq: Option<Option<i64>> = task_change::Entity::find()
            .select_only()
            .column_as(task_change::Column::Seq.max(), "seq")
            .into_tuple()
            .one(&txn)
            .await?;
        let mut tasks = Vec::new();
        if !ids.is_empty() {
            for row in task::Entity::find()
                .filter(task::Column::Id.is_in(ids.iter().map(Id::to_string)))
                .all(&txn)
                .await?
            {
                tasks.push(convert::task_from_row(row)?);
            }
        } else {
            let mut filter = filter.clone();
            loop {
                let page = list_tasks_on(&txn, &filter).await?;
                tasks.extend(page.items);
                match page.next {
                    Some(next) => filter.before = Some(next),
                    None => break,
                }
            }
        }
        txn.commit().await?;
        Ok((tasks, seq.flatten().map_or(0, |s| s as u64)))
    }

    pub async fn get_execution(&self, id: Id) -> StoreResult<Option<Execution>> {
        execution::Entity::find_by_id(id.to_string())
            .one(&self.reader)
            .await?
            .map(convert::execution_from_row)
            .transpose()
    }

    /// A task's executions, oldest first, after the `after` execution.
    pub async fn list_executions(
        &self,
        task_id: Id,
        after: Option<Id>,
        limit: u64,
    ) -> StoreResult<Page<Execution>> {
        let mut query =
            execution::Entity::find().filter(execution::Column::TaskId.eq(task_id.to_string()));
        if let Some(after) = after {
            query = query.filter(execution::Column::Id.gt(after.to_string()));
        }
        let rows = query
            .order_by_asc(execution::Column::Id)
            .limit(limit + 1)
            .all(&self.reader)
            .await?;
        let executions = rows
            .into_iter()
            .map(convert::execution_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(executions, limit, |e| e.id))
    }
}

/// Cuts a `limit + 1` result down to one page and the next page's token.
/// Tasks not held for a server other than `server_id` at `now`: held for
/// nobody, for it, or no longer (see `TaskUpdate::if_free_for`).
pub(crate) fn free_for(server_id: &str, now: UnixMillis) -> Condition {
    Condition::any()
        .add(task::Column::Owner.eq(""))
        .add(task::Column::Owner.eq(server_id))
        .add(task::Column::LeaseUntil.lt(now))
}

fn paginate<T>(mut items: Vec<T>, limit: u64, id_of: impl Fn(&T) -> Id) -> Page<T> {
    let limit = limit as usize;
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(id_of)
    } else {
        None
    };
    Page { items, next }
}

async fn connect(url: &str, max_connections: u32) -> StoreResult<DatabaseConnection> {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| {
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
        });
    Database::connect(options)
        .await
        .map_err(|e| StoreError::Db(format!("cannot open {}: {e}", describe(url))))
}

/// The URL without any password.
fn describe(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{user}@{}", &url[..scheme_end + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// [`Store::list_tasks`] on a connection or a transaction.
async fn list_tasks_on(
    db: &impl sea_orm::ConnectionTrait,
    filter: &TaskFilter,
) -> StoreResult<Page<Task>> {
    let mut query = task::Entity::find();
    if !filter.states.is_empty() {
        query = query.filter(task::Column::State.is_in(filter.states.iter().map(|s| s.as_str())));
    }
    if let Some(project) = &filter.project {
        query = query.filter(task::Column::Project.eq(project.as_str()));
    }
    if let Some(tag) = &filter.tag {
        query = query.filter(
            task::Column::Id.in_subquery(
                Query::select()
                    .column(task_tag::Column::TaskId)
                    .from(task_tag::Entity)
                    .and_where(task_tag::Column::Tag.eq(tag.as_str()))
                    .to_owned(),
            ),
        );
    }
    if let Some(before) = filter.before {
        query = query.filter(task::Column::Id.lt(before.to_string()));
    }
    let rows = query
        .order_by_desc(task::Column::Id)
        .limit(filter.limit + 1)
        .all(db)
        .await?;
    let tasks = rows
        .into_iter()
        .map(convert::task_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(paginate(tasks, filter.limit, |t| t.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_hide_passwords() {
        assert_eq!(
            describe("postgres://app:secret@db:5432/x"),
            "postgres://app@db:5432/x"
        );
        assert_eq!(
            describe("sqlite:///tmp/a.db?mode=rwc"),
            "sqlite:///tmp/a.db?mode=rwc"
        );
    }
}
