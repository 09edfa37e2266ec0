//! sea-orm entities: the stored shape of tasks, their tags and executions.
//! Private to `store`; nothing outside it sees these types.

pub mod task {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "task")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        pub instructions: String,
        pub project: String,
        pub agent_type: String,
        pub agent_model: String,
        /// JSON array of strings.
        pub allowed_tools: String,
        pub max_budget_usd: f64,
        pub max_turns: i64,
        pub timeout_secs: i64,
        pub priority: i32,
        /// JSON array of strings.
        pub tags: String,
        /// JSON array of task ids.
        pub depends_on: String,
        pub parent_task_id: Option<String>,
        pub max_attempts: i64,
        pub review_required: bool,
        /// Where the sandbox starts; empty: the project's HEAD.
        pub base_ref: String,
        /// `dependencies`, `head` or `working_tree`.
        pub start_from: String,
        /// `off`, `on_complete` or `on_accept`.
        pub pull_requests: String,
        #[sea_orm(unique)]
        pub idempotency_key: Option<String>,
        pub state: String,
        pub state_reason: String,
        pub summary: String,
        pub attempts: i64,
        pub run_after: i64,
        /// JSON of the pending question, or empty.
        pub question: String,
        pub pending_input: String,
        pub created_at: i64,
        pub updated_at: i64,
        /// The server holding the task while it runs; empty when none has.
        pub owner: String,
        /// Until when (Unix ms) the owner's claim holds unless renewed.
        pub lease_until: i64,
        /// The agent the running attempt uses (an `auto` task's pick).
        pub running_agent: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// One row per (task, tag), so listing by tag uses an index.
pub mod task_tag {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "task_tag")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tag: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub task_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod execution {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "execution")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub task_id: String,
        pub attempt: i64,
        pub state: String,
        pub started_at: i64,
        pub ended_at: Option<i64>,
        pub exit_code: Option<i32>,
        pub error: String,
        pub agent: String,
        pub model: String,
        pub session_id: String,
        pub cost_usd: f64,
        pub cost_estimated: bool,
        pub cost_unknown: bool,
        pub input_tokens: i64,
        pub output_tokens: i64,
        pub turns: i64,
        /// JSON array of paths.
        pub changed_files: String,
        /// JSON array of {path, added, removed}.
        pub file_changes: String,
        /// JSON array of commit hashes.
        pub commits: String,
        pub summary: String,
        pub log_path: String,
        /// JSON array of strings.
        pub permission_denials: String,
        pub server_id: String,
        /// `named`, `model` or `rule`.
        pub agent_choice: String,
        pub agent_choice_reason: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod agent_mark {
    use sea_orm::entity::prelude::*;

    /// An agent set aside until a time, seen by every server.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "agent_mark")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub agent: String,
        pub limited_until: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod server {
    use sea_orm::entity::prelude::*;

    /// A server sharing the database: the agents it can run (names, comma
    /// separated), and when it last said so.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "server")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub agents: String,
        pub seen_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod log_line {
    use sea_orm::entity::prelude::*;

    /// One line of an execution's log file, shared through the database.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "log_line")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub execution_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub offset: i64,
        pub line: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod task_change {
    use sea_orm::entity::prelude::*;

    /// One committed task state change (`from_state` empty: the task was
    /// created), numbered in commit order; `origin` is the store instance
    /// (server process) that wrote it.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "task_change")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub task_id: String,
        pub from_state: String,
        pub to_state: String,
        pub reason: String,
        pub at: i64,
        pub origin: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod pull_request {
    use sea_orm::entity::prelude::*;

    /// A task's pull request (`core::pulls::PullRecord`); `number` 0 while
    /// a server is opening it.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "pull_request")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub task_id: String,
        pub repository: String,
        pub number: i64,
        pub url: String,
        pub state: String,
        pub head_ref: String,
        pub head_sha: String,
        pub base_ref: String,
        pub resumes: i64,
        pub opened_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod github_delivery {
    use sea_orm::entity::prelude::*;

    /// A webhook delivery already handled (`X-GitHub-Delivery`), so a
    /// redelivery does nothing twice.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "github_delivery")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
