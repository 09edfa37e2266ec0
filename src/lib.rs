//! claudomator: a gRPC control plane that runs AI coding agents on real
//! software projects.
//!
//! # Layout
//! - [`core`]: tasks, the state machine, validation, the executor, the log
//!   hub. No tonic, axum or sea-orm.
//! - [`runners`]: the `Runner` trait and the agent CLIs behind it.
//! - [`sandbox`]: the git sandbox an agent runs in.
//! - [`store`]: sea-orm over SQLite or PostgreSQL; takes and returns core types.
//! - [`grpc`]: thin tonic adapters over the core, plus auth.
//! - [`http`]: the GitHub webhook shim and `/healthz` (axum), over the core.
//! - [`notify`]: signed webhook notifications of task state changes.
//! - [`signature`]: HMAC-SHA256 webhook signatures (`sha256=<hex>`).
//! - [`github`]: the GitHub REST client behind `core::codehost::CodeHost`.
//! - [`llm`]: the OpenAI-compatible chat client behind `core::llm::ChatModel`.
//! - [`error`]: the one mapping from core errors to gRPC statuses.
//! - [`config`]: the typed, layered, validated config.
//! - [`app`]: wiring and shutdown.
//! - [`data_dir`]: the private data dir and the lock one server holds on it.
//! - [`cli`]: the `claudomator` command.
//! - [`proto`]: code generated from `proto/claudomator/v1`.

pub mod app;
pub mod cli;
pub mod config;
pub mod core;
pub mod data_dir;
pub mod error;
pub mod github;
pub mod grpc;
pub mod http;
pub mod llm;
pub mod notify;
pub mod runners;
pub mod sandbox;
pub mod signature;
pub mod store;

/// Generated from `proto/claudomator/v1`.
pub mod proto {
    tonic::include_proto!("claudomator.v1");

    /// The encoded descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("claudomator_v1_descriptor");
}

/// A bare unary echo service, only the baseline for `benches/submit.rs`.
#[doc(hidden)]
pub mod bench_echo {
    tonic::include_proto!("claudomator.bench");
}
