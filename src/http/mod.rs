//! The HTTP edge (axum), beside the gRPC one on `http_listen`: the GitHub
//! webhook shim and a health check. A thin adapter: handlers read and check
//! the request, make one call into the core (`core::ci::CiTriage`, or
//! `core::pulls::Pulls` for pull request events), and
//! write the answer as JSON.
//!
//! - `POST /webhooks/github`: see [`github`].
//! - `GET /healthz`: 200 while the server runs, for load balancers.
//!
//! Connections are served by [`listener`]: timeouts and a connection cap.

pub mod github;
pub mod listener;

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use github::GithubHook;
pub use listener::ListenerLimits;

/// The shim's routes.
pub fn router(hook: Arc<GithubHook>) -> Router {
    Router::new()
        .route("/webhooks/github", post(github::receive))
        .route("/healthz", get(healthz))
        .with_state(hook)
}

/// Serves until `shutdown` fires; requests in flight then finish.
pub async fn serve(
    listener: TcpListener,
    hook: Arc<GithubHook>,
    limits: ListenerLimits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    listener::serve(listener, router(hook), limits, shutdown).await
}

async fn healthz() -> Response {
    Reply::new(StatusCode::OK, "ok", "serving").into_response()
}

/// Every answer of the shim: a status and a small JSON body saying what
/// was done and why.
#[derive(Clone, Debug, Serialize)]
pub struct Reply {
    #[serde(skip)]
    pub status: StatusCode,
    /// `created`, `duplicate`, `capped`, `passed`, `ignored`, `pong`,
    /// `ok`, `error`; for pull requests `resumed`, `blocked`, `completed`,
    /// `cancelled`, `recorded`.
    pub outcome: &'static str,
    pub message: String,
    /// The task made, or found, for the delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Stale triage tasks cancelled because of the delivery.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cancelled: Vec<String>,
}

impl Reply {
    pub fn new(status: StatusCode, outcome: &'static str, message: impl Into<String>) -> Self {
        Reply {
            status,
            outcome,
            message: message.into(),
            task_id: None,
            cancelled: Vec::new(),
        }
    }

    /// A refusal: a 4xx or 5xx saying what is wrong.
    pub fn error(status: StatusCode, message: impl Into<String>) -> Self {
        Reply::new(status, "error", message)
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let body = serde_json::to_string(&self).unwrap_or_else(|_| "{}".into());
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}
