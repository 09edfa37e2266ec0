"""Errors: every failed call raises a ClaudomatorError carrying the gRPC code,
and the structured details the server sent with it (every bad field of a
refused request, the state a task would have had to be in)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

#: The trailer a gRPC server puts a `google.rpc.Status` with details in.
STATUS_DETAILS_KEY = "grpc-status-details-bin"

#: `PreconditionViolation.type` of a task in a state the request does not fit.
TASK_STATE = "TASK_STATE"


class FieldViolation(NamedTuple):
    """One bad field of a refused request (`google.rpc.BadRequest`)."""

    #: The field's path as the proto names it: ``"spec.timeout"``,
    #: ``"spec.agent.max_budget_usd"``, ``"page_size"``, ``"task_ids[2]"``.
    field: str
    #: Why, a fragment that reads after the field's name: ``"must not be empty"``.
    description: str


class PreconditionViolation(NamedTuple):
    """A precondition the request failed (`google.rpc.PreconditionFailure`)."""

    #: ``"TASK_STATE"``: a task in a state that does not allow the request.
    type: str
    #: For ``TASK_STATE``: the task's id.
    subject: str
    #: For ``TASK_STATE``: ``"current COMPLETED; wanted READY"`` (or
    #: ``"wanted one of A, B"``).
    description: str


class ClaudomatorError(Exception):
    """A call the server (or the channel) refused.

    `code` is the gRPC status code (`grpc.StatusCode.INVALID_ARGUMENT`, ...),
    `message` the server's message as sent (for INVALID_ARGUMENT it starts with
    the offending field: ``spec.timeout: cannot parse "soon" ...``).
    Subclasses exist for the codes a caller usually handles; any other code
    raises this class itself.
    """

    code: grpc.StatusCode
    message: str
    #: Every bad field of the request, for INVALID_ARGUMENT (empty otherwise,
    #: or when the server sent no details).
    field_violations: tuple[FieldViolation, ...]
    #: The failed preconditions, for FAILED_PRECONDITION caused by a task's
    #: state (type ``TASK_STATE``); empty otherwise.
    precondition_violations: tuple[PreconditionViolation, ...]

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        field_violations: Sequence[FieldViolation] = (),
        precondition_violations: Sequence[PreconditionViolation] = (),
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.field_violations = tuple(field_violations)
        self.precondition_violations = tuple(precondition_violations)

    @property
    def code_name(self) -> str:
        """The code as gRPC spells it: ``"INVALID_ARGUMENT"``."""
        return self.code.name

    @property
    def fields(self) -> list[str]:
        """The bad fields' paths, in the server's order (a field may repeat)."""
        return [v.field for v in self.field_violations]

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:  # picklable despite the extra args
        return (
            _rebuild,
            (self.code.name, self.message, self.field_violations, self.precondition_violations),
        )


class InvalidArgumentError(ClaudomatorError):
    """INVALID_ARGUMENT: the request was rejected and nothing was written."""


class NotFoundError(ClaudomatorError):
    """NOT_FOUND: no task or execution has that id."""


class AlreadyExistsError(ClaudomatorError):
    """ALREADY_EXISTS: e.g. a client-chosen task id that is taken."""


class FailedPreconditionError(ClaudomatorError):
    """FAILED_PRECONDITION: the task's state forbids the move."""


class UnauthenticatedError(ClaudomatorError):
    """UNAUTHENTICATED: the server wants a (valid) bearer token."""


class PermissionDeniedError(ClaudomatorError):
    """PERMISSION_DENIED."""


class UnavailableError(ClaudomatorError):
    """UNAVAILABLE: the server cannot be reached (or is shutting down)."""


class DeadlineExceededError(ClaudomatorError):
    """DEADLINE_EXCEEDED: the call took longer than its timeout."""


_BY_CODE: dict[grpc.StatusCode, type[ClaudomatorError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
}


def error_for(
    code: grpc.StatusCode,
    message: str,
    *,
    field_violations: Sequence[FieldViolation] = (),
    precondition_violations: Sequence[PreconditionViolation] = (),
) -> ClaudomatorError:
    """The most specific error class for `code`."""
    return _BY_CODE.get(code, ClaudomatorError)(
        code,
        message,
        field_violations=field_violations,
        precondition_violations=precondition_violations,
    )


def from_rpc_error(err: grpc.RpcError) -> ClaudomatorError:
    """Translates what grpcio raised (a `grpc.Call` as well as an error)."""
    code: Optional[grpc.StatusCode] = None
    message = ""
    trailers: Any = None
    # A sync call's error is a `grpc.Call`; grpc.aio's `AioRpcError` is not,
    # but has the same `code()`, `details()` and `trailing_metadata()`.
    if isinstance(err, grpc.Call) or isinstance(err, grpc.aio.AioRpcError):
        code = err.code()
        message = err.details() or ""
        trailers = err.trailing_metadata()
    fields, preconditions = decode_details(trailers)
    return error_for(
        code or grpc.StatusCode.UNKNOWN,
        message or str(err),
        field_violations=fields,
        precondition_violations=preconditions,
    )


def decode_details(
    trailers: Any,
) -> tuple[list[FieldViolation], list[PreconditionViolation]]:
    """The violations in a call's `grpc-status-details-bin` trailer (a
    `google.rpc.Status`); nothing when it is absent or unreadable."""
    fields: list[FieldViolation] = []
    preconditions: list[PreconditionViolation] = []
    for key, value in trailers or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    fields.extend(
                        FieldViolation(v.field, v.description) for v in bad.field_violations
                    )
                elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
                    failure = error_details_pb2.PreconditionFailure()
                    detail.Unpack(failure)
                    preconditions.extend(
                        PreconditionViolation(v.type, v.subject, v.description)
                        for v in failure.violations
                    )
        except DecodeError:
            return [], []
    return fields, preconditions


def _rebuild(
    code_name: str,
    message: str,
    field_violations: Sequence[FieldViolation] = (),
    precondition_violations: Sequence[PreconditionViolation] = (),
) -> ClaudomatorError:
    return error_for(
        grpc.StatusCode[code_name],
        message,
        field_violations=field_violations,
        precondition_violations=precondition_violations,
    )
