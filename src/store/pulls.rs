//! The store's side of pull requests: a task's pull request (claimed by the
//! one server that opens it, then saved, updated as GitHub reports on it),
//! the per-PR count of automatic resumes (a compare-and-set, so servers
//! hearing the same feedback count it once), and the webhook deliveries
//! already handled.

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter};

use super::convert::{pull_from_row, pull_to_row};
use super::entity::{github_delivery, pull_request};
use super::writer::WriteOp;
use super::{Store, StoreResult};
use crate::core::codehost::PullState;
use crate::core::model::{Id, UnixMillis};
use crate::core::pulls::PullRecord;

/// How long a handled delivery id is remembered (GitHub redelivers within
/// days, by hand).
const DELIVERIES_KEPT_MS: i64 = 7 * 24 * 3600 * 1000;

/// A write about pull requests (one `WriteOp::Pull`).
#[derive(Debug)]
pub enum PullOp {
    /// Inserts the claim (a record with number 0) unless the task has a
    /// row; an unfinished claim older than `stale_before` is taken over.
    Claim(Box<PullRecord>, UnixMillis),
    /// Writes the whole record.
    Save(Box<PullRecord>),
    /// Drops an unfinished claim (the opening failed).
    Release(String),
    /// `resumes + 1` while it is below `max`.
    CountResume { task_id: String, max: u32, at: i64 },
    /// A new state and/or head as GitHub reports them.
    Update {
        task_id: String,
        state: Option<String>,
        head_sha: Option<String>,
        at: i64,
    },
    /// Remembers a delivery id (0 rows: it was already handled).
    Delivery { id: String, at: i64 },
}

pub(super) async fn apply(txn: &DatabaseTransaction, op: &PullOp) -> StoreResult<u64> {
    use pull_request::Column;
    match op {
        PullOp::Claim(record, stale_before) => {
            let inserted = pull_request::Entity::insert(pull_to_row(record))
                .on_conflict(OnConflict::column(Column::TaskId).do_nothing().to_owned())
                .exec_without_returning(txn)
                .await?;
            if inserted > 0 {
                return Ok(inserted);
            }
            let taken = pull_request::Entity::update_many()
                .col_expr(Column::UpdatedAt, Expr::value(record.updated_at))
                .filter(Column::TaskId.eq(record.task_id.to_string()))
                .filter(Column::Number.eq(0))
                .filter(Column::UpdatedAt.lt(*stale_before))
                .exec(txn)
                .await?;
            Ok(taken.rows_affected)
        }
        PullOp::Save(record) => {
            pull_request::Entity::insert(pull_to_row(record))
                .on_conflict(
                    OnConflict::column(Column::TaskId)
                        .update_columns([
                            Column::Repository,
                            Column::Number,
                            Column::Url,
                            Column::State,
                            Column::HeadRef,
                            Column::HeadSha,
                            Column::BaseRef,
                            Column::UpdatedAt,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(txn)
                .await?;
            Ok(1)
        }
        PullOp::Release(task_id) => Ok(pull_request::Entity::delete_many()
            .filter(Column::TaskId.eq(task_id.as_str()))
            .filter(Column::Number.eq(0))
            .exec(txn)
            .await?
            .rows_affected),
        PullOp::CountResume { task_id, max, at } => Ok(pull_request::Entity::update_many()
            .col_expr(Column::Resumes, Expr::col(Column::Resumes).add(1))
            .col_expr(Column::UpdatedAt, Expr::value(*at))
            .filter(Column::TaskId.eq(task_id.as_str()))
            .filter(Column::Resumes.lt(i64::from(*max)))
            .exec(txn)
            .await?
            .rows_affected),
        PullOp::Update {
            task_id,
            state,
            head_sha,
            at,
        } => {
            let mut update = pull_request::Entity::update_many()
                .col_expr(Column::UpdatedAt, Expr::value(*at))
                .filter(Column::TaskId.eq(task_id.as_str()));
            if let Some(state) = state {
                update = update.col_expr(Column::State, Expr::value(state.as_str()));
            }
            if let Some(sha) = head_sha {
                update = update.col_expr(Column::HeadSha, Expr::value(sha.as_str()));
            }
            Ok(update.exec(txn).await?.rows_affected)
        }
        PullOp::Delivery { id, at } => {
            github_delivery::Entity::delete_many()
                .filter(github_delivery::Column::At.lt(*at - DELIVERIES_KEPT_MS))
                .exec(txn)
                .await?;
            let row = github_delivery::ActiveModel {
                id: sea_orm::ActiveValue::Set(id.clone()),
                at: sea_orm::ActiveValue::Set(*at),
            };
            Ok(github_delivery::Entity::insert(row)
                .on_conflict(
                    OnConflict::column(github_delivery::Column::Id)
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(txn)
                .await?)
        }
    }
}

impl Store {
    async fn pull_op(&self, op: PullOp) -> StoreResult<u64> {
        self.writer.write(WriteOp::Pull(op)).await
    }

    /// Claims the opening of `record.task_id`'s pull request: true for the
    /// one caller (over every server) that gets it; a claim older than
    /// `stale_before` (its server died opening) can be taken over.
    pub async fn claim_pull(
        &self,
        record: PullRecord,
        stale_before: UnixMillis,
    ) -> StoreResult<bool> {
        Ok(self
            .pull_op(PullOp::Claim(Box::new(record), stale_before))
            .await?
            > 0)
    }

    pub async fn save_pull(&self, record: PullRecord) -> StoreResult<()> {
        self.pull_op(PullOp::Save(Box::new(record))).await?;
        Ok(())
    }

    /// Gives up a claim whose opening failed.
    pub async fn release_pull(&self, task_id: Id) -> StoreResult<()> {
        self.pull_op(PullOp::Release(task_id.to_string())).await?;
        Ok(())
    }

    /// Counts one automatic resume unless `max` are counted already
    /// (false: the cap is reached, nothing counted).
    pub async fn count_pull_resume(&self, task_id: Id, max: u32) -> StoreResult<bool> {
        let op = PullOp::CountResume {
            task_id: task_id.to_string(),
            max,
            at: crate::core::model::now_millis(),
        };
        Ok(self.pull_op(op).await? > 0)
    }

    /// Records what GitHub says of the pull request now.
    pub async fn update_pull(
        &self,
        task_id: Id,
        state: Option<PullState>,
        head_sha: Option<&str>,
    ) -> StoreResult<()> {
        let op = PullOp::Update {
            task_id: task_id.to_string(),
            state: state.map(|s| s.as_str().to_string()),
            head_sha: head_sha.map(str::to_string),
            at: crate::core::model::now_millis(),
        };
        self.pull_op(op).await?;
        Ok(())
    }

    /// Remembers a webhook delivery: false when it was handled before.
    pub async fn first_delivery(&self, id: &str, at: UnixMillis) -> StoreResult<bool> {
        let op = PullOp::Delivery {
            id: id.to_string(),
            at,
        };
        Ok(self.pull_op(op).await? > 0)
    }

    pub async fn get_pull(&self, task_id: Id) -> StoreResult<Option<PullRecord>> {
        pull_request::Entity::find_by_id(task_id.to_string())
            .one(&self.reader)
            .await?
            .map(pull_from_row)
            .transpose()
    }

    /// The pull requests of these tasks (those that have one).
    pub async fn pulls_of(&self, task_ids: &[Id]) -> StoreResult<Vec<PullRecord>> {
        if task_ids.is_empty() {
            return Ok(Vec::new());
        }
        pull_request::Entity::find()
            .filter(pull_request::Column::TaskId.is_in(task_ids.iter().map(Id::to_string)))
            .all(&self.reader)
            .await?
            .into_iter()
            .map(pull_from_row)
            .collect()
    }

    /// The task's pull request numbered `number` in `repository`.
    pub async fn find_pull(
        &self,
        repository: &str,
        number: u64,
    ) -> StoreResult<Option<PullRecord>> {
        pull_request::Entity::find()
            .filter(pull_request::Column::Repository.eq(repository))
            .filter(pull_request::Column::Number.eq(number as i64))
            .one(&self.reader)
            .await?
            .map(pull_from_row)
            .transpose()
    }
}
