"""A Python client for claudomator, generated from its proto/ at build time.

    from claudomator_client import Client
    client = Client("127.0.0.1:7070")
    task = client.submit_task("Fix the flaky test", tags=["ci"]).task

The generated modules are `claudomator_client.v1.task_pb2` (messages and
enums), `.service_pb2` (requests and responses) and `.service_pb2_grpc` (the
raw stub); the common names are re-exported here.
"""

#: This client's version: the claudomator release it is generated from.
__version__ = "0.1.0"

from .aio import AsyncClient, AsyncLogStream, AsyncWatchStream
from .client import Client, LogStream, Waited, WatchStream, enum_name, enum_value
from .errors import (
    AlreadyExistsError,
    ClaudomatorError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    TASK_STATE,
    FieldViolation,
    PermissionDeniedError,
    PreconditionViolation,
    UnauthenticatedError,
    UnavailableError,
)
from .v1.service_pb2 import (
    ElaborateResponse,
    ElaborateSource,
    FileDiffStatus,
    GetSystemStatusResponse,
    GetTaskDiffResponse,
    ListExecutionsResponse,
    ListTasksResponse,
    MergeTaskResponse,
    OpenPullRequestResponse,
    PrunedKind,
    PruneTasksResponse,
    SubmitTaskResponse,
    TaskChange,
    WatchTasksResponse,
)
from .v1.task_pb2 import (
    AgentSettings,
    AgentType,
    Execution,
    ExecutionState,
    FileChange,
    LogEvent,
    LogEventKind,
    Priority,
    PullRequest,
    PullRequests,
    StartFrom,
    Task,
    TaskSpec,
    TaskState,
)

__all__ = [
    "AsyncClient",
    "AsyncLogStream",
    "AsyncWatchStream",
    "Waited",
    "WatchStream",
    "WatchTasksResponse",
    "TaskChange",
    "PruneTasksResponse",
    "PrunedKind",
    "MergeTaskResponse",
    "OpenPullRequestResponse",
    "PullRequest",
    "PullRequests",
    "GetTaskDiffResponse",
    "GetSystemStatusResponse",
    "FileDiffStatus",
    "ElaborateSource",
    "ElaborateResponse",
    "AgentSettings",
    "AgentType",
    "AlreadyExistsError",
    "ClaudomatorError",
    "Client",
    "DeadlineExceededError",
    "Execution",
    "ExecutionState",
    "FailedPreconditionError",
    "FieldViolation",
    "FileChange",
    "InvalidArgumentError",
    "ListExecutionsResponse",
    "ListTasksResponse",
    "LogEvent",
    "LogEventKind",
    "LogStream",
    "NotFoundError",
    "PermissionDeniedError",
    "PreconditionViolation",
    "Priority",
    "StartFrom",
    "SubmitTaskResponse",
    "TASK_STATE",
    "Task",
    "TaskSpec",
    "TaskState",
    "UnauthenticatedError",
    "UnavailableError",
    "enum_name",
    "enum_value",
]
