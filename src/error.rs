//! The one place core errors become gRPC statuses.

use tonic::{Code, Status};

use crate::core::CoreError;

pub fn to_status(err: CoreError) -> Status {
    let code = match &err {
        CoreError::InvalidArgument { .. } => Code::InvalidArgument,
        CoreError::NotFound { .. } => Code::NotFound,
        CoreError::AlreadyExists(_) => Code::AlreadyExists,
        CoreError::IllegalTransition(_) | CoreError::FailedPrecondition(_) => {
            Code::FailedPrecondition
        }
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
