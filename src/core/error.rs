//! The core's error: what went wrong, in terms a client can act on.
//! `crate::error` maps each kind to a gRPC code; nothing else does.

use super::state::IllegalTransition;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A request field is wrong; `field` names it as the client wrote it.
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },

    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },

    #[error("{0}")]
    AlreadyExists(String),

    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),

    /// The request does not fit the task's current state.
    #[error("{0}")]
    FailedPrecondition(String),

    /// A position (a watch cursor) outside what the server still holds.
    #[error("{0}")]
    OutOfRange(String),

    /// The server is shutting down or a dependency is away; retry later.
    #[error("{0}")]
    Unavailable(String),

    /// A fault of ours (the store failed); details are logged.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CoreError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        CoreError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        CoreError::NotFound {
            what,
            id: id.to_string(),
        }
    }
}

pub type CoreResult<T> = Result<T, CoreError>;
