//! The one batching writer. Callers send write operations over a bounded
//! channel (backpressure) and wait for their reply; the writer task takes
//! everything that is waiting (up to `MAX_BATCH`), applies it in one
//! transaction on its own connection, commits, then replies to each caller.
//! A caller is only told "done" after the commit. A run of task inserts in
//! a batch is written as one multi-row INSERT.
//!
//! If a batch fails (say one insert hits a unique key), it is rolled back and
//! each operation is retried in its own transaction, so one bad write never
//! fails its neighbours.
//!
//! Every task it inserts and every state change it applies is also written,
//! in the same transaction, as a row of the change log (`task_change`),
//! numbered in commit order: on PostgreSQL a transaction that writes the
//! log first takes one advisory lock held until it commits, so no server
//! can commit a later number before an earlier one. After each commit that
//! wrote the log the writer bumps `commits`, waking the tailers
//! (`core::bus`).

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DatabaseTransaction, EntityTrait, QueryFilter,
    TransactionTrait,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::convert::{execution_to_row, task_to_row};
use super::entity::{agent_mark, execution, log_line, server, task, task_change, task_tag};
use super::{InsertCap, TaskUpdate};
use super::{StoreError, StoreResult};
use crate::core::model::{Execution, Task, TaskState};

const MAX_BATCH: usize = 512;
const QUEUE_DEPTH: usize = 4096;

pub enum WriteOp {
    InsertTask(Box<Task>),
    /// Inserts the task unless the cap is reached (0 rows: it was).
    InsertTaskCapped(Box<Task>, InsertCap),
    UpdateTask(Box<TaskUpdate>),
    SaveExecution(Box<Execution>),
    /// Log lines (execution, offset, line); a line already there is kept.
    InsertLogLines(Vec<(String, i64, String)>),
    /// Sets `agent` aside until `until`, unless a later mark stands.
    MarkAgent {
        agent: String,
        until: i64,
    },
    /// Moves a running task `owner` holds to another agent's slot, under
    /// that agent's cluster limit like a claim.
    MoveAgentSlot {
        id: String,
        owner: String,
        agent: String,
        cluster_limit: Option<usize>,
    },
    /// Says which agents server `id` can run, as of `at`; None: it left.
    AnnounceServer {
        id: String,
        agents: Option<String>,
        at: i64,
    },
    /// Extends `owner`'s lease on those of `ids` it still holds (RUNNING).
    RenewLeases {
        owner: String,
        until: i64,
        ids: Vec<String>,
    },
    /// Drops the change log's rows older than `before` (ms), but for the
    /// newest of them, which marks where the kept log starts.
    PruneChanges {
        before: i64,
    },
    /// About pull requests (`store::pulls`).
    Pull(super::pulls::PullOp),
}

struct Job {
    op: WriteOp,
    reply: oneshot::Sender<StoreResult<u64>>,
}

#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

/// Who writes: the change log's `origin` of this writer's rows, and where
/// it says that it committed some.
struct Log {
    origin: String,
    commits: watch::Sender<u64>,
}

impl Writer {
    /// Starts the writer task on its own connection. It ends when every
    /// `Writer` handle is dropped. Its change-log rows carry `origin`; the
    /// receiver counts the commits that wrote some.
    pub fn spawn(db: DatabaseConnection, origin: String) -> (Writer, watch::Receiver<u64>) {
        let (jobs, rx) = mpsc::channel(QUEUE_DEPTH);
        let (commits, committed) = watch::channel(0);
        tokio::spawn(run(db, rx, Log { origin, commits }));
        (Writer { jobs }, committed)
    }

    /// Applies one operation; returns the rows it changed, once committed.
    pub async fn write(&self, op: WriteOp) -> StoreResult<u64> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

async fn run(db: DatabaseConnection, mut rx: mpsc::Receiver<Job>, log: Log) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let ops: Vec<&WriteOp> = batch.iter().map(|job| &job.op).collect();
        let results = match apply_in_one_transaction(&db, &ops, &log).await {
            Ok(changed) => changed.into_iter().map(Ok).collect(),
            Err(err) if ops.len() == 1 => vec![Err(err)],
            Err(_) => {
                let mut results = Vec::with_capacity(ops.len());
                for op in &ops {
                    results.push(
                        apply_in_one_transaction(&db, std::slice::from_ref(op), &log)
                            .await
                            .map(|changed| changed[0]),
                    );
                }
                results
            }
        };
        for (job, result) in batch.drain(..).zip(results) {
            let _ = job.reply.send(result);
        }
    }
}

async fn apply_in_one_transaction(
    db: &DatabaseConnection,
    ops: &[&WriteOp],
    log: &Log,
) -> StoreResult<Vec<u64>> {
    let txn = db.begin().await?;
    let writes_log = ops.iter().any(|op| {
        matches!(
            op,
            WriteOp::InsertTask(_) | WriteOp::InsertTaskCapped(..) | WriteOp::UpdateTask(_)
        )
    });
    if writes_log {
        // First, before any other lock (a claim's per-agent one), so
        // every transaction takes them in the same order. It also makes
        // a capped insert's count and insert one step: no other task
        // insert on any server commits in between.
        lock_change_log(&txn).await?;
    }
    let mut changes = Vec::new();
    let mut changed = Vec::with_capacity(ops.len());
    let mut rest = ops;
    while !rest.is_empty() {
        // A run of task inserts becomes one multi-row INSERT per table.
        let inserts = rest
            .iter()
            .take_while(|op| matches!(op, WriteOp::InsertTask(_)))
            .count();
        if inserts > 1 {
            let tasks = rest[..inserts].iter().filter_map(|op| match op {
                WriteOp::InsertTask(task) => Some(task.as_ref()),
                _ => None,
            });
            changes.extend(tasks.clone().map(|t| created(t, &log.origin)));
            insert_tasks(&txn, tasks).await?;
            changed.extend(std::iter::repeat_n(1, inserts));
            rest = &rest[inserts..];
        } else {
            let rows = apply(&txn, rest[0]).await?;
            if let Some(change) = change_of(rest[0], rows, &log.origin) {
                changes.push(change);
            }
            changed.push(rows);
            rest = &rest[1..];
        }
    }
    let wrote_log = !changes.is_empty();
    if wrote_log {
        task_change::Entity::insert_many(changes)
            .exec_without_returning(&txn)
            .await?;
    }
    txn.commit().await?;
    if wrote_log {
        log.commits.send_modify(|n| *n += 1);
    }
    Ok(changed)
}

/// The change-log row of a new task.
fn created(task: &Task, origin: &str) -> task_change::ActiveModel {
    change_row(
        task.id.to_string(),
        "",
        task.state.as_str(),
        "submitted",
        task.created_at,
        origin,
    )
}

/// The change-log row of an operation that changed `rows` rows, if it is a
/// task state change that took effect.
fn change_of(op: &WriteOp, rows: u64, origin: &str) -> Option<task_change::ActiveModel> {
    match op {
        WriteOp::InsertTask(t) => Some(created(t, origin)),
        WriteOp::InsertTaskCapped(t, _) if rows > 0 => Some(created(t, origin)),
        WriteOp::UpdateTask(u) if rows > 0 => Some(change_row(
            u.id.to_string(),
            u.from.as_str(),
            u.to.as_str(),
            &u.reason,
            u.at,
            origin,
        )),
        _ => None,
    }
}

fn change_row(
    task_id: String,
    from: &str,
    to: &str,
    reason: &str,
    at: i64,
    origin: &str,
) -> task_change::ActiveModel {
    use sea_orm::ActiveValue::{NotSet, Set};
    task_change::ActiveModel {
        seq: NotSet,
        task_id: Set(task_id),
        from_state: Set(from.to_string()),
        to_state: Set(to.to_string()),
        reason: Set(reason.to_string()),
        at: Set(at),
        origin: Set(origin.to_string()),
    }
}

/// Serializes change-log writers until this transaction ends, so `seq`
/// order is commit order over every server (PostgreSQL; SQLite has one
/// writer).
async fn lock_change_log(txn: &DatabaseTransaction) -> StoreResult<()> {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtext('claudomator.change_log'))",
        ))
        .await?;
    }
    Ok(())
}

async fn insert_tasks<'a>(
    txn: &DatabaseTransaction,
    tasks: impl Iterator<Item = &'a Task> + Clone,
) -> StoreResult<()> {
    task::Entity::insert_many(tasks.clone().map(task_to_row))
        .exec_without_returning(txn)
        .await?;
    let tags: Vec<task_tag::ActiveModel> = tasks
        .flat_map(|t| {
            t.tags.iter().map(|tag| task_tag::ActiveModel {
                tag: sea_orm::ActiveValue::Set(tag.clone()),
                task_id: sea_orm::ActiveValue::Set(t.id.to_string()),
            })
        })
        .collect();
    if !tags.is_empty() {
        task_tag::Entity::insert_many(tags)
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

async fn apply(txn: &DatabaseTransaction, op: &WriteOp) -> StoreResult<u64> {
    match op {
        WriteOp::InsertTask(t) => {
            insert_tasks(txn, std::iter::once(t.as_ref())).await?;
            Ok(1)
        }
        WriteOp::InsertTaskCapped(t, cap) => {
            if tagged_since(txn, cap).await? >= cap.max {
                return Ok(0);
            }
            insert_tasks(txn, std::iter::once(t.as_ref())).await?;
            Ok(1)
        }
        WriteOp::UpdateTask(u) => {
            let mut update = task::Entity::update_many()
                .col_expr(task::Column::State, Expr::value(u.to.as_str()))
                .col_expr(task::Column::StateReason, Expr::value(u.reason.as_str()))
                .col_expr(task::Column::UpdatedAt, Expr::value(u.at));
            if let Some(attempts) = u.attempts {
                update = update.col_expr(task::Column::Attempts, Expr::value(i64::from(attempts)));
            }
            if let Some(run_after) = u.run_after {
                update = update.col_expr(task::Column::RunAfter, Expr::value(run_after));
            }
            if let Some(question) = &u.question {
                let text = question
                    .as_ref()
                    .map(|q| serde_json::to_string(q).expect("a question serializes"))
                    .unwrap_or_default();
                update = update.col_expr(task::Column::Question, Expr::value(text));
            }
            if let Some(input) = &u.pending_input {
                update = update.col_expr(task::Column::PendingInput, Expr::value(input.as_str()));
            }
            if let Some(summary) = &u.summary {
                update = update.col_expr(task::Column::Summary, Expr::value(summary.as_str()));
            }
            if let Some(lease) = &u.lease {
                update = update
                    .col_expr(task::Column::Owner, Expr::value(lease.owner.as_str()))
                    .col_expr(task::Column::LeaseUntil, Expr::value(lease.until));
            }
            if let Some(owner) = &u.if_owner {
                update = update.filter(task::Column::Owner.eq(owner.as_str()));
            }
            if let Some(server_id) = &u.if_free_for {
                update = update.filter(super::free_for(server_id, u.at));
            }
            if let Some(before) = u.if_lease_before {
                update = update.filter(task::Column::LeaseUntil.lt(before));
            }
            if let Some(slot) = &u.agent_slot {
                let agent = slot.agent.as_str();
                if cluster_full(txn, agent, slot.cluster_limit).await? {
                    return Ok(0);
                }
                update = update.col_expr(task::Column::RunningAgent, Expr::value(agent));
            }
            let result = update
                .filter(task::Column::Id.eq(u.id.to_string()))
                .filter(task::Column::State.eq(u.from.as_str()))
                .exec(txn)
                .await?;
            Ok(result.rows_affected)
        }
        WriteOp::InsertLogLines(lines) => {
            if lines.is_empty() {
                return Ok(0);
            }
            let rows = lines
                .iter()
                .map(|(execution, offset, line)| log_line::ActiveModel {
                    execution_id: sea_orm::ActiveValue::Set(execution.clone()),
                    offset: sea_orm::ActiveValue::Set(*offset),
                    line: sea_orm::ActiveValue::Set(line.clone()),
                });
            log_line::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::columns([log_line::Column::ExecutionId, log_line::Column::Offset])
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(txn)
                .await?;
            Ok(lines.len() as u64)
        }
        WriteOp::MarkAgent { agent, until } => {
            let row = agent_mark::ActiveModel {
                agent: sea_orm::ActiveValue::Set(agent.clone()),
                limited_until: sea_orm::ActiveValue::Set(*until),
            };
            agent_mark::Entity::insert(row)
                .on_conflict(
                    OnConflict::column(agent_mark::Column::Agent)
                        .value(
                            agent_mark::Column::LimitedUntil,
                            Expr::cust(
                                "CASE WHEN excluded.limited_until > agent_mark.limited_until \
                                 THEN excluded.limited_until ELSE agent_mark.limited_until END",
                            ),
                        )
                        .to_owned(),
                )
                .exec_without_returning(txn)
                .await?;
            Ok(1)
        }
        WriteOp::MoveAgentSlot {
            id,
            owner,
            agent,
            cluster_limit,
        } => {
            if cluster_full(txn, agent, *cluster_limit).await? {
                return Ok(0);
            }
            let result = task::Entity::update_many()
                .col_expr(task::Column::RunningAgent, Expr::value(agent.as_str()))
                .filter(task::Column::Id.eq(id.as_str()))
                .filter(task::Column::Owner.eq(owner.as_str()))
                .filter(task::Column::State.eq(TaskState::Running.as_str()))
                .exec(txn)
                .await?;
            Ok(result.rows_affected)
        }
        WriteOp::AnnounceServer { id, agents, at } => {
            let Some(agents) = agents else {
                let result = server::Entity::delete_by_id(id.clone()).exec(txn).await?;
                return Ok(result.rows_affected);
            };
            let row = server::ActiveModel {
                id: sea_orm::ActiveValue::Set(id.clone()),
                agents: sea_orm::ActiveValue::Set(agents.clone()),
                seen_at: sea_orm::ActiveValue::Set(*at),
            };
            server::Entity::insert(row)
                .on_conflict(
                    OnConflict::column(server::Column::Id)
                        .update_columns([server::Column::Agents, server::Column::SeenAt])
                        .to_owned(),
                )
                .exec_without_returning(txn)
                .await?;
            Ok(1)
        }
        WriteOp::Pull(op) => super::pulls::apply(txn, op).await,
        WriteOp::RenewLeases { owner, until, ids } => {
            let result = task::Entity::update_many()
                .col_expr(task::Column::LeaseUntil, Expr::value(*until))
                .filter(task::Column::Owner.eq(owner.as_str()))
                .filter(task::Column::State.eq(TaskState::Running.as_str()))
                .filter(task::Column::Id.is_in(ids.iter().map(String::as_str)))
                .exec(txn)
                .await?;
            Ok(result.rows_affected)
        }
        WriteOp::PruneChanges { before } => {
            use sea_orm::QuerySelect;
            let newest_old: Option<i64> = task_change::Entity::find()
                .select_only()
                .column_as(task_change::Column::Seq.max(), "seq")
                .filter(task_change::Column::At.lt(*before))
                .into_tuple::<Option<i64>>()
                .one(txn)
                .await?
                .flatten();
            let Some(keep) = newest_old else {
                return Ok(0);
            };
            let result = task_change::Entity::delete_many()
                .filter(task_change::Column::Seq.lt(keep))
                .exec(txn)
                .await?;
            Ok(result.rows_affected)
        }
        WriteOp::SaveExecution(e) => {
            let columns = [
                execution::Column::State,
                execution::Column::EndedAt,
                execution::Column::ExitCode,
                execution::Column::Error,
                execution::Column::Agent,
                execution::Column::Model,
                execution::Column::SessionId,
                execution::Column::CostUsd,
                execution::Column::CostEstimated,
                execution::Column::CostUnknown,
                execution::Column::InputTokens,
                execution::Column::OutputTokens,
                execution::Column::Turns,
                execution::Column::ChangedFiles,
                execution::Column::FileChanges,
                execution::Column::Commits,
                execution::Column::Summary,
                execution::Column::LogPath,
                execution::Column::PermissionDenials,
            ];
            execution::Entity::insert(execution_to_row(e))
                .on_conflict(
                    OnConflict::column(execution::Column::Id)
                        .update_columns(columns)
                        .to_owned(),
                )
                .exec_without_returning(txn)
                .await?;
            Ok(1)
        }
    }
}

/// Tasks carrying `cap.tag`, made since `cap.since`, not cancelled.
async fn tagged_since(txn: &DatabaseTransaction, cap: &InsertCap) -> StoreResult<u64> {
    use sea_orm::PaginatorTrait;
    use sea_orm::sea_query::Query;
    Ok(task::Entity::find()
        .filter(
            task::Column::Id.in_subquery(
                Query::select()
                    .column(task_tag::Column::TaskId)
                    .from(task_tag::Entity)
                    .and_where(task_tag::Column::Tag.eq(cap.tag.as_str()))
                    .to_owned(),
            ),
        )
        .filter(task::Column::CreatedAt.gte(cap.since))
        .filter(task::Column::State.ne(TaskState::Cancelled.as_str()))
        .count(txn)
        .await?)
}

/// Whether `agent` already runs `limit` attempts over all servers (never,
/// without a limit). Counted under a lock held until this transaction
/// commits (PostgreSQL: an advisory lock per agent; SQLite has one writer),
/// so two claims never both take the last slot.
async fn cluster_full(
    txn: &DatabaseTransaction,
    agent: &str,
    limit: Option<usize>,
) -> StoreResult<bool> {
    let Some(limit) = limit else {
        return Ok(false);
    };
    Ok(running_on_all_servers(txn, agent).await? >= limit as u64)
}

/// Attempts of `agent` running on every server (see `cluster_full`).
async fn running_on_all_servers(txn: &DatabaseTransaction, agent: &str) -> StoreResult<u64> {
    use sea_orm::{ConnectionTrait, DbBackend, PaginatorTrait, Statement};
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtext('claudomator.agent.' || $1))",
            [agent.into()],
        ))
        .await?;
    }
    Ok(task::Entity::find()
        .filter(task::Column::State.eq(TaskState::Running.as_str()))
        .filter(task::Column::RunningAgent.eq(agent))
        .count(txn)
        .await?)
}
