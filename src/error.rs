//! The one place core errors become gRPC statuses and HTTP status codes.
//!
//! INVALID_ARGUMENT carries every bad field as a `google.rpc.BadRequest`,
//! and FAILED_PRECONDITION caused by a task's state a
//! `google.rpc.PreconditionFailure` (type `TASK_STATE`, subject the task's
//! id), in a `google.rpc.Status` in the `grpc-status-details-bin` trailer;
//! the status message stays a sentence for people.

use prost::Message;
use tonic::{Code, Status};

use crate::core::CoreError;
use crate::core::error::{Violations, WrongState};
use crate::core::logs::LogError;
use crate::rpc_status as rpc;

/// The `PreconditionFailure.Violation.type` of a task in the wrong state.
pub const TASK_STATE: &str = "TASK_STATE";

pub fn to_status(err: CoreError) -> Status {
    let code = match &err {
        CoreError::InvalidArgument(_) => Code::InvalidArgument,
        CoreError::NotFound { .. } => Code::NotFound,
        CoreError::AlreadyExists(_) => Code::AlreadyExists,
        CoreError::IllegalTransition(_)
        | CoreError::FailedPrecondition(_)
        | CoreError::WrongState(_) => Code::FailedPrecondition,
        CoreError::OutOfRange(_) => Code::OutOfRange,
        CoreError::Unavailable(_) => Code::Unavailable,
        CoreError::Internal(_) => Code::Internal,
    };
    let message = err.to_string();
    let details = match &err {
        CoreError::InvalidArgument(violations) => vec![bad_request(violations)],
        CoreError::WrongState(wrong) => vec![precondition_failure(wrong)],
        _ => return Status::new(code, message),
    };
    let status = rpc::Status {
        code: code as i32,
        message: message.clone(),
        details,
    };
    Status::with_details(code, message, status.encode_to_vec().into())
}

fn any(name: &str, message: &impl Message) -> prost_types::Any {
    prost_types::Any {
        type_url: rpc::type_url(name),
        value: message.encode_to_vec(),
    }
}

fn bad_request(violations: &Violations) -> prost_types::Any {
    let detail = rpc::BadRequest {
        field_violations: violations
            .iter()
            .map(|v| rpc::bad_request::FieldViolation {
                field: v.field.clone(),
                description: v.description.clone(),
            })
            .collect(),
    };
    any("BadRequest", &detail)
}

fn precondition_failure(wrong: &WrongState) -> prost_types::Any {
    let detail = rpc::PreconditionFailure {
        violations: vec![rpc::precondition_failure::Violation {
            r#type: TASK_STATE.to_string(),
            subject: wrong.task_id.clone(),
            description: wrong.description(),
        }],
    };
    any("PreconditionFailure", &detail)
}

/// The bad fields a status's details list (a `google.rpc.BadRequest`), as
/// `(field, description)`; none when it has no such details.
pub fn field_violations(status: &Status) -> Vec<(String, String)> {
    let Ok(decoded) = rpc::Status::decode(status.details()) else {
        return Vec::new();
    };
    decoded
        .details
        .iter()
        .filter(|any| any.type_url == rpc::type_url("BadRequest"))
        .filter_map(|any| rpc::BadRequest::decode(any.value.as_slice()).ok())
        .flat_map(|bad| bad.field_violations)
        .map(|v| (v.field, v.description))
        .collect()
}

impl From<CoreError> for Status {
    fn from(err: CoreError) -> Self {
        to_status(err)
    }
}

impl From<Violations> for Status {
    fn from(violations: Violations) -> Self {
        to_status(CoreError::InvalidArgument(violations))
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
        CoreError::InvalidArgument(_) => 400,
        CoreError::NotFound { .. } => 404,
        CoreError::AlreadyExists(_)
        | CoreError::IllegalTransition(_)
        | CoreError::FailedPrecondition(_)
        | CoreError::WrongState(_) => 409,
        CoreError::OutOfRange(_) => 410,
        CoreError::Unavailable(_) => 503,
        CoreError::Internal(_) => 500,
    }
}
