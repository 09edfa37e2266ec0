//! Schema migrations, run on every start. The same migrations serve SQLite
//! and PostgreSQL. Add a new migration; never edit one that has shipped.

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001Tasks),
            Box::new(M0002Executor),
            Box::new(M0003PermissionDenials),
            Box::new(M0004Questions),
            Box::new(M0005AgentChoice),
            Box::new(M0006Cluster),
            Box::new(M0007TaskBaseRef),
            Box::new(M0008Servers),
            Box::new(M0009TaskChanges),
            Box::new(M0010TaskStartFrom),
            Box::new(M0011CostUnknown),
            Box::new(M0012PullRequests),
        ]
    }
}

/// Tasks, their tags and executions.
struct M0001Tasks;

impl MigrationName for M0001Tasks {
    fn name(&self) -> &str {
        "m0001_tasks"
    }
}

#[derive(DeriveIden)]
enum Task {
    Table,
    Id,
    Name,
    Instructions,
    Project,
    AgentType,
    AgentModel,
    AllowedTools,
    MaxBudgetUsd,
    MaxTurns,
    TimeoutSecs,
    Priority,
    Tags,
    DependsOn,
    ParentTaskId,
    MaxAttempts,
    ReviewRequired,
    IdempotencyKey,
    State,
    StateReason,
    Summary,
    Attempts,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum TaskTag {
    Table,
    Tag,
    TaskId,
}

#[derive(DeriveIden)]
enum Execution {
    Table,
    Id,
    TaskId,
    Attempt,
    State,
    StartedAt,
    EndedAt,
    ExitCode,
    Error,
    Agent,
    Model,
    SessionId,
    CostUsd,
    CostEstimated,
    InputTokens,
    OutputTokens,
    Turns,
    ChangedFiles,
    Commits,
    Summary,
    LogPath,
}

fn text(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().not_null().to_owned()
}

fn big(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).big_integer().not_null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Tasks {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Task::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Task::Id)
                            .string_len(26)
                            .not_null()
                            .primary_key(),
                    )
                    .col(text(Task::Name))
                    .col(text(Task::Instructions))
                    .col(text(Task::Project))
                    .col(text(Task::AgentType))
                    .col(text(Task::AgentModel))
                    .col(text(Task::AllowedTools))
                    .col(ColumnDef::new(Task::MaxBudgetUsd).double().not_null())
                    .col(big(Task::MaxTurns))
                    .col(big(Task::TimeoutSecs))
                    .col(ColumnDef::new(Task::Priority).integer().not_null())
                    .col(text(Task::Tags))
                    .col(text(Task::DependsOn))
                    .col(ColumnDef::new(Task::ParentTaskId).string_len(26).null())
                    .col(big(Task::MaxAttempts))
                    .col(ColumnDef::new(Task::ReviewRequired).boolean().not_null())
                    .col(
                        ColumnDef::new(Task::IdempotencyKey)
                            .text()
                            .null()
                            .unique_key(),
                    )
                    .col(text(Task::State))
                    .col(text(Task::StateReason))
                    .col(text(Task::Summary))
                    .col(big(Task::Attempts))
                    .col(big(Task::CreatedAt))
                    .col(big(Task::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("idx_task_state", Task::State),
            ("idx_task_project", Task::Project),
        ] {
            manager
                .create_index(
                    Index::create()
                        .if_not_exists()
                        .name(name)
                        .table(Task::Table)
                        .col(column)
                        .col(Task::Id)
                        .to_owned(),
                )
                .await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(TaskTag::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(TaskTag::Tag).text().not_null())
                    .col(ColumnDef::new(TaskTag::TaskId).string_len(26).not_null())
                    .primary_key(Index::create().col(TaskTag::Tag).col(TaskTag::TaskId))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Execution::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Execution::Id)
                            .string_len(26)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Execution::TaskId).string_len(26).not_null())
                    .col(big(Execution::Attempt))
                    .col(text(Execution::State))
                    .col(big(Execution::StartedAt))
                    .col(ColumnDef::new(Execution::EndedAt).big_integer().null())
                    .col(ColumnDef::new(Execution::ExitCode).integer().null())
                    .col(text(Execution::Error))
                    .col(text(Execution::Agent))
                    .col(text(Execution::Model))
                    .col(text(Execution::SessionId))
                    .col(ColumnDef::new(Execution::CostUsd).double().not_null())
                    .col(
                        ColumnDef::new(Execution::CostEstimated)
                            .boolean()
                            .not_null(),
                    )
                    .col(big(Execution::InputTokens))
                    .col(big(Execution::OutputTokens))
                    .col(big(Execution::Turns))
                    .col(text(Execution::ChangedFiles))
                    .col(text(Execution::Commits))
                    .col(text(Execution::Summary))
                    .col(text(Execution::LogPath))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_execution_task")
                    .table(Execution::Table)
                    .col(Execution::TaskId)
                    .col(Execution::Id)
                    .to_owned(),
            )
            .await
    }
}

/// What the executor needs: a task's backoff time, per-file line counts.
struct M0002Executor;

impl MigrationName for M0002Executor {
    fn name(&self) -> &str {
        "m0002_executor"
    }
}

#[derive(DeriveIden)]
enum TaskV2 {
    #[sea_orm(iden = "task")]
    Table,
    RunAfter,
}

#[derive(DeriveIden)]
enum ExecutionV2 {
    #[sea_orm(iden = "execution")]
    Table,
    FileChanges,
}

#[async_trait::async_trait]
impl MigrationTrait for M0002Executor {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(TaskV2::Table)
                    .add_column(
                        ColumnDef::new(TaskV2::RunAfter)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ExecutionV2::Table)
                    .add_column(
                        ColumnDef::new(ExecutionV2::FileChanges)
                            .text()
                            .not_null()
                            .default("[]"),
                    )
                    .to_owned(),
            )
            .await
    }
}

/// Tool calls an agent's permissions refused, per execution.
struct M0003PermissionDenials;

impl MigrationName for M0003PermissionDenials {
    fn name(&self) -> &str {
        "m0003_permission_denials"
    }
}

#[derive(DeriveIden)]
enum ExecutionV3 {
    #[sea_orm(iden = "execution")]
    Table,
    PermissionDenials,
}

#[async_trait::async_trait]
impl MigrationTrait for M0003PermissionDenials {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ExecutionV3::Table)
                    .add_column(
                        ColumnDef::new(ExecutionV3::PermissionDenials)
                            .text()
                            .not_null()
                            .default("[]"),
                    )
                    .to_owned(),
            )
            .await
    }
}

/// An agent's pending question, and the input the next run resumes with.
struct M0004Questions;

impl MigrationName for M0004Questions {
    fn name(&self) -> &str {
        "m0004_questions"
    }
}

#[derive(DeriveIden)]
enum TaskV4 {
    #[sea_orm(iden = "task")]
    Table,
    Question,
    PendingInput,
}

#[async_trait::async_trait]
impl MigrationTrait for M0004Questions {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [TaskV4::Question, TaskV4::PendingInput] {
            manager
                .alter_table(
                    Table::alter()
                        .table(TaskV4::Table)
                        .add_column(ColumnDef::new(column).text().not_null().default(""))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// Who chose an execution's agent (an `auto` task's classification), and why.
struct M0005AgentChoice;

impl MigrationName for M0005AgentChoice {
    fn name(&self) -> &str {
        "m0005_agent_choice"
    }
}

#[derive(DeriveIden)]
enum ExecutionV5 {
    #[sea_orm(iden = "execution")]
    Table,
    AgentChoice,
    AgentChoiceReason,
}

#[async_trait::async_trait]
impl MigrationTrait for M0005AgentChoice {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (column, default) in [
            (ExecutionV5::AgentChoice, "named"),
            (ExecutionV5::AgentChoiceReason, ""),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ExecutionV5::Table)
                        .add_column(ColumnDef::new(column).text().not_null().default(default))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// Several servers on one database: which server holds a running task and
/// until when (its lease), and which server ran an execution.
struct M0006Cluster;

impl MigrationName for M0006Cluster {
    fn name(&self) -> &str {
        "m0006_cluster"
    }
}

#[derive(DeriveIden)]
enum TaskV6 {
    #[sea_orm(iden = "task")]
    Table,
    Owner,
    LeaseUntil,
    RunningAgent,
}

#[derive(DeriveIden)]
enum AgentMark {
    Table,
    Agent,
    LimitedUntil,
}

#[derive(DeriveIden)]
enum LogLine {
    Table,
    ExecutionId,
    Offset,
    Line,
}

#[derive(DeriveIden)]
enum ExecutionV6 {
    #[sea_orm(iden = "execution")]
    Table,
    ServerId,
}

#[async_trait::async_trait]
impl MigrationTrait for M0006Cluster {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(TaskV6::Table)
                    .add_column(ColumnDef::new(TaskV6::Owner).text().not_null().default(""))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(TaskV6::Table)
                    .add_column(
                        ColumnDef::new(TaskV6::LeaseUntil)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(TaskV6::Table)
                    .add_column(
                        ColumnDef::new(TaskV6::RunningAgent)
                            .text()
                            .not_null()
                            .default(""),
                    )
                    .to_owned(),
            )
            .await?;
        // Agents set aside (rate limit, spent quota), shared by the servers.
        manager
            .create_table(
                Table::create()
                    .table(AgentMark::Table)
                    .col(
                        ColumnDef::new(AgentMark::Agent)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(AgentMark::LimitedUntil)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        // Execution logs shared through the database, so any server can
        // serve any execution's log (`[executor] share_logs`).
        manager
            .create_table(
                Table::create()
                    .table(LogLine::Table)
                    .col(ColumnDef::new(LogLine::ExecutionId).text().not_null())
                    .col(ColumnDef::new(LogLine::Offset).big_integer().not_null())
                    .col(ColumnDef::new(LogLine::Line).text().not_null())
                    .primary_key(
                        Index::create()
                            .col(LogLine::ExecutionId)
                            .col(LogLine::Offset),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ExecutionV6::Table)
                    .add_column(
                        ColumnDef::new(ExecutionV6::ServerId)
                            .text()
                            .not_null()
                            .default(""),
                    )
                    .to_owned(),
            )
            .await?;
        // The reaper looks for running tasks whose lease ran out.
        manager
            .create_index(
                Index::create()
                    .name("task_state_lease")
                    .table(TaskV6::Table)
                    .col(Alias::new("state"))
                    .col(TaskV6::LeaseUntil)
                    .to_owned(),
            )
            .await
    }
}

/// Where a task's sandbox starts: a branch, tag or commit (empty: HEAD).
struct M0007TaskBaseRef;

impl MigrationName for M0007TaskBaseRef {
    fn name(&self) -> &str {
        "m0007_task_base_ref"
    }
}

#[derive(DeriveIden)]
enum TaskV7 {
    #[sea_orm(iden = "task")]
    Table,
    BaseRef,
}

#[async_trait::async_trait]
impl MigrationTrait for M0007TaskBaseRef {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(TaskV7::Table)
                    .add_column(
                        ColumnDef::new(TaskV7::BaseRef)
                            .text()
                            .not_null()
                            .default(""),
                    )
                    .to_owned(),
            )
            .await
    }
}

/// The servers sharing the database and the agents each can run, so a
/// server without an agent leaves its tasks to one that has it.
struct M0008Servers;

impl MigrationName for M0008Servers {
    fn name(&self) -> &str {
        "m0008_servers"
    }
}

#[derive(DeriveIden)]
enum Server {
    Table,
    Id,
    Agents,
    SeenAt,
}

#[async_trait::async_trait]
impl MigrationTrait for M0008Servers {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Server::Table)
                    .col(ColumnDef::new(Server::Id).text().not_null().primary_key())
                    .col(ColumnDef::new(Server::Agents).text().not_null())
                    .col(ColumnDef::new(Server::SeenAt).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }
}

/// The change log: every task state change (and every new task), in the
/// order it was committed, numbered by `seq`. `WatchTasks` replays it
/// from a client's cursor and every server tails it (`core::bus`).
struct M0009TaskChanges;

impl MigrationName for M0009TaskChanges {
    fn name(&self) -> &str {
        "m0009_task_changes"
    }
}

#[derive(DeriveIden)]
enum TaskChange {
    Table,
    Seq,
    TaskId,
    FromState,
    ToState,
    Reason,
    At,
    Origin,
}

#[async_trait::async_trait]
impl MigrationTrait for M0009TaskChanges {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TaskChange::Table)
                    .col(
                        ColumnDef::new(TaskChange::Seq)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(TaskChange::TaskId).text().not_null())
                    .col(ColumnDef::new(TaskChange::FromState).text().not_null())
                    .col(ColumnDef::new(TaskChange::ToState).text().not_null())
                    .col(ColumnDef::new(TaskChange::Reason).text().not_null())
                    .col(ColumnDef::new(TaskChange::At).big_integer().not_null())
                    .col(ColumnDef::new(TaskChange::Origin).text().not_null())
                    .to_owned(),
            )
            .await
    }
}

/// Where a task's sandbox starts when it names no base ref.
struct M0010TaskStartFrom;

impl MigrationName for M0010TaskStartFrom {
    fn name(&self) -> &str {
        "m0010_task_start_from"
    }
}

#[derive(DeriveIden)]
enum TaskV10 {
    #[sea_orm(iden = "task")]
    Table,
    StartFrom,
}

#[async_trait::async_trait]
impl MigrationTrait for M0010TaskStartFrom {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(TaskV10::Table)
                    .add_column(
                        ColumnDef::new(TaskV10::StartFrom)
                            .text()
                            .not_null()
                            .default("dependencies"),
                    )
                    .to_owned(),
            )
            .await
    }
}

/// An execution whose cost is not known (no price for its model, or the
/// agent stopped before it reported usage), rather than $0.
struct M0011CostUnknown;

impl MigrationName for M0011CostUnknown {
    fn name(&self) -> &str {
        "m0011_cost_unknown"
    }
}

#[derive(DeriveIden)]
enum ExecutionV11 {
    #[sea_orm(iden = "execution")]
    Table,
    CostUnknown,
}

#[async_trait::async_trait]
impl MigrationTrait for M0011CostUnknown {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ExecutionV11::Table)
                    .add_column(
                        ColumnDef::new(ExecutionV11::CostUnknown)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await
    }
}

/// Pull requests: a task's setting, the pull request it opened (one per
/// task; found by repository and number when GitHub reports on it), and the
/// webhook deliveries already handled.
struct M0012PullRequests;

impl MigrationName for M0012PullRequests {
    fn name(&self) -> &str {
        "m0012_pull_requests"
    }
}

#[derive(DeriveIden)]
enum TaskV12 {
    #[sea_orm(iden = "task")]
    Table,
    PullRequests,
}

#[derive(DeriveIden)]
enum PullRequest {
    Table,
    TaskId,
    Repository,
    Number,
    Url,
    State,
    HeadRef,
    HeadSha,
    BaseRef,
    Resumes,
    OpenedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum GithubDelivery {
    Table,
    Id,
    At,
}

#[async_trait::async_trait]
impl MigrationTrait for M0012PullRequests {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(TaskV12::Table)
                    .add_column(
                        ColumnDef::new(TaskV12::PullRequests)
                            .text()
                            .not_null()
                            .default("off"),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PullRequest::Table)
                    .col(
                        ColumnDef::new(PullRequest::TaskId)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(PullRequest::Repository).text().not_null())
                    .col(ColumnDef::new(PullRequest::Number).big_integer().not_null())
                    .col(ColumnDef::new(PullRequest::Url).text().not_null())
                    .col(ColumnDef::new(PullRequest::State).text().not_null())
                    .col(ColumnDef::new(PullRequest::HeadRef).text().not_null())
                    .col(ColumnDef::new(PullRequest::HeadSha).text().not_null())
                    .col(ColumnDef::new(PullRequest::BaseRef).text().not_null())
                    .col(
                        ColumnDef::new(PullRequest::Resumes)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PullRequest::OpenedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PullRequest::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_pull_request_repository_number")
                    .table(PullRequest::Table)
                    .col(PullRequest::Repository)
                    .col(PullRequest::Number)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(GithubDelivery::Table)
                    .col(
                        ColumnDef::new(GithubDelivery::Id)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(GithubDelivery::At).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }
}
