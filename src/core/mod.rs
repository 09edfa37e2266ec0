//! The core: tasks, their state machine and validation. It knows nothing of
//! gRPC, HTTP or the database driver: it never imports tonic, axum or
//! sea-orm, and reaches the store only through `crate::store::Store`, whose
//! functions take and return the types in `model`.

pub mod activity;
pub mod bus;
pub mod ci;
pub mod classify;
pub mod codehost;
pub mod elaborate;
pub mod error;
pub mod events;
pub mod executor;
pub mod follow;
pub mod llm;
pub mod logs;
pub mod model;
pub mod pulls;
pub mod recovery;
pub mod review;
pub mod runner;
pub mod shared_logs;
pub mod state;
pub mod status;
pub mod summary;
pub mod tasks;
pub mod validate;
pub mod watch;

pub use error::{CoreError, CoreResult};
pub use tasks::{Activity, ListQuery, TaskService};
