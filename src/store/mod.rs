//! The task store: sea-orm over embedded SQLite (default) or PostgreSQL.
//!
//! Reads go through a small pool; every write goes through one batching
//! writer (`writer.rs`), so bursts of writes share a transaction instead of
//! contending for SQLite's single write lock. Every function takes and returns
//! core types; no sea-orm type leaves this module.

mod convert;
mod entity;
mod migration;
mod writer;

use std::path::Path;
use std::time::Duration;

use sea_orm::sea_query::Query;
use sea_orm::{
    ColumnTrait, ConnectOptions, Database, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use sea_orm_migration::MigratorTrait;

use crate::core::model::{
    Execution, ExecutionState, Id, Page, Question, Task, TaskFilter, TaskState, UnixMillis,
};
use entity::{execution, task, task_tag};
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
        }
    }
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    reader: DatabaseConnection,
    writer: Writer,
    description: String,
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
        Ok(Store {
            reader,
            writer: Writer::spawn(writer_db),
            description: describe(url),
        })
    }

    /// The database, for the start-up log line (no password).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Stores a new task and its tags.
    pub async fn insert_task(&self, task: Task) -> StoreResult<()> {
        self.writer
            .write(WriteOp::InsertTask(Box::new(task)))
            .await?;
        Ok(())
    }

    /// Applies the update if the task is still in `update.from`. Returns
    /// false, changing nothing, when another writer moved it first.
    pub async fn update_task(&self, update: TaskUpdate) -> StoreResult<bool> {
        let changed = self
            .writer
            .write(WriteOp::UpdateTask(Box::new(update)))
            .await?;
        Ok(changed > 0)
    }

    /// Queued tasks whose backoff has passed, in the order they should run:
    /// high priority first, then oldest first.
    pub async fn runnable_tasks(&self, now: UnixMillis, limit: u64) -> StoreResult<Vec<Task>> {
        task::Entity::find()
            .filter(task::Column::State.eq(TaskState::Queued.as_str()))
            .filter(task::Column::RunAfter.lte(now))
            .order_by_desc(task::Column::Priority)
            .order_by_asc(task::Column::Id)
            .limit(limit)
            .all(&self.reader)
            .await?
            .into_iter()
            .map(convert::task_from_row)
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

    /// Executions in one state, oldest first.
    pub async fn executions_in_state(&self, state: ExecutionState) -> StoreResult<Vec<Execution>> {
        execution::Entity::find()
            .filter(execution::Column::State.eq(state.as_str()))
            .order_by_asc(execution::Column::Id)
            .all(&self.reader)
            .await?
            .into_iter()
            .map(convert::execution_from_row)
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
        let mut query = task::Entity::find();
        if !filter.states.is_empty() {
            query =
                query.filter(task::Column::State.is_in(filter.states.iter().map(|s| s.as_str())));
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
            .all(&self.reader)
            .await?;
        let tasks = rows
            .into_iter()
            .map(convert::task_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(tasks, filter.limit, |t| t.id))
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
