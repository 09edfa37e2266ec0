"""Errors: every failed call raises a ClaudomatorError carrying the gRPC code."""

from __future__ import annotations

from typing import Any, Optional

import grpc


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

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @property
    def code_name(self) -> str:
        """The code as gRPC spells it: ``"INVALID_ARGUMENT"``."""
        return self.code.name

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:  # picklable despite the extra args
        return (_rebuild, (self.code.name, self.message))


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


def error_for(code: grpc.StatusCode, message: str) -> ClaudomatorError:
    """The most specific error class for `code`."""
    return _BY_CODE.get(code, ClaudomatorError)(code, message)


def from_rpc_error(err: grpc.RpcError) -> ClaudomatorError:
    """Translates what grpcio raised (a `grpc.Call` as well as an error)."""
    code: Optional[grpc.StatusCode] = None
    message = ""
    # A sync call's error is a `grpc.Call`; grpc.aio's `AioRpcError` is not,
    # but has the same `code()` and `details()`.
    if isinstance(err, grpc.Call) or isinstance(err, grpc.aio.AioRpcError):
        code = err.code()
        message = err.details() or ""
    return error_for(code or grpc.StatusCode.UNKNOWN, message or str(err))


def _rebuild(code_name: str, message: str) -> ClaudomatorError:
    return error_for(grpc.StatusCode[code_name], message)
