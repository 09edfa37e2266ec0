//! The one place core errors become gRPC statuses and HTTP status codes.

use tonic::{Code, Status};

use crate::core::CoreError;
use crate::core::logs::LogError;

pub fn to_status(err: CoreError) -> Status {
    let code = match &err {
        CoreError::InvalidArgument { .. } => Code::InvalidArgument,
        CoreError::NotFound { .. } => Code::NotFound,
        CoreError::AlreadyExists(_) => Code::AlreadyExists,
        CoreError::IllegalTransition(_) | CoreError::FailedPrecondition(_) => {
            Code::FailedPrecondition
        }
        CoreError::OutOfRange(_) => Code::OutOfRange,
        CoreError::Unavailable(_) => Code::Unavailable,
        CoreError::Internal(_) => Code::Internal,
    };
    Status::new(code, err.to_string())
}

impl From<CoreError> for Status {
    fn from(err: CoreError) -> Self {
        to_status(err)
    }
}

/// A log that could not be read to its end, as the `StreamLogs` stream's
/// last item: always `INTERNAL` (the request was fine; the server's copy of
/// the log, or its store, failed).
impl From<LogError> for Status {
    fn from(err: LogError) -> Self {
        Status::internal(err.to_string())
    }
}

/// The HTTP status of a core error, for the HTTP shim.
pub fn http_status(err: &CoreError) -> u16 {
    match err {
        CoreError::InvalidArgument { .. } => 400,
        CoreError::NotFound { .. } => 404,
        CoreError::AlreadyExists(_)
        | CoreError::IllegalTransition(_)
        | CoreError::FailedPrecondition(_) => 409,
        CoreError::OutOfRange(_) => 410,
        CoreError::Unavailable(_) => 503,
        CoreError::Internal(_) => 500,
    }
}
