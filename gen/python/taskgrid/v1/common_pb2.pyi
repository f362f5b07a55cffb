import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATUS_UNSPECIFIED: _ClassVar[TaskStatus]
    TASK_STATUS_QUEUED: _ClassVar[TaskStatus]
    TASK_STATUS_ASSIGNED: _ClassVar[TaskStatus]
    TASK_STATUS_RUNNING: _ClassVar[TaskStatus]
    TASK_STATUS_COMPLETED: _ClassVar[TaskStatus]
    TASK_STATUS_FAILED: _ClassVar[TaskStatus]
    TASK_STATUS_TIMEOUT: _ClassVar[TaskStatus]
    TASK_STATUS_STOPPED: _ClassVar[TaskStatus]
    TASK_STATUS_EXPIRED: _ClassVar[TaskStatus]

class RunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATUS_UNSPECIFIED: _ClassVar[RunStatus]
    RUN_STATUS_RUNNING: _ClassVar[RunStatus]
    RUN_STATUS_COMPLETED: _ClassVar[RunStatus]
    RUN_STATUS_FAILED: _ClassVar[RunStatus]
    RUN_STATUS_TIMEOUT: _ClassVar[RunStatus]
    RUN_STATUS_STOPPED: _ClassVar[RunStatus]

class WorkerStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_STATUS_UNSPECIFIED: _ClassVar[WorkerStatus]
    WORKER_STATUS_ACTIVE: _ClassVar[WorkerStatus]
    WORKER_STATUS_DISABLED: _ClassVar[WorkerStatus]
    WORKER_STATUS_TERMINATE: _ClassVar[WorkerStatus]
    WORKER_STATUS_KILL: _ClassVar[WorkerStatus]
TASK_STATUS_UNSPECIFIED: TaskStatus
TASK_STATUS_QUEUED: TaskStatus
TASK_STATUS_ASSIGNED: TaskStatus
TASK_STATUS_RUNNING: TaskStatus
TASK_STATUS_COMPLETED: TaskStatus
TASK_STATUS_FAILED: TaskStatus
TASK_STATUS_TIMEOUT: TaskStatus
TASK_STATUS_STOPPED: TaskStatus
TASK_STATUS_EXPIRED: TaskStatus
RUN_STATUS_UNSPECIFIED: RunStatus
RUN_STATUS_RUNNING: RunStatus
RUN_STATUS_COMPLETED: RunStatus
RUN_STATUS_FAILED: RunStatus
RUN_STATUS_TIMEOUT: RunStatus
RUN_STATUS_STOPPED: RunStatus
WORKER_STATUS_UNSPECIFIED: WorkerStatus
WORKER_STATUS_ACTIVE: WorkerStatus
WORKER_STATUS_DISABLED: WorkerStatus
WORKER_STATUS_TERMINATE: WorkerStatus
WORKER_STATUS_KILL: WorkerStatus

class Command(_message.Message):
    __slots__ = ("executable", "args", "env", "cwd")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EXECUTABLE_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    executable: str
    args: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    cwd: str
    def __init__(self, executable: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., cwd: _Optional[str] = ...) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ("function_name", "task_name", "group_name", "uuid", "args", "vars", "enabled", "start_time", "next_run_time", "stop_time", "repeats", "retry_failed", "period", "prevent_drift", "cronline", "timeout", "sync_output", "immediate", "broadcast", "priority", "discard_results", "retry_delay", "retry_backoff", "retry_delay_max", "retry_jitter", "command", "args_value", "vars_value")
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    VARS_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    NEXT_RUN_TIME_FIELD_NUMBER: _ClassVar[int]
    STOP_TIME_FIELD_NUMBER: _ClassVar[int]
    REPEATS_FIELD_NUMBER: _ClassVar[int]
    RETRY_FAILED_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    PREVENT_DRIFT_FIELD_NUMBER: _ClassVar[int]
    CRONLINE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    SYNC_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    IMMEDIATE_FIELD_NUMBER: _ClassVar[int]
    BROADCAST_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DISCARD_RESULTS_FIELD_NUMBER: _ClassVar[int]
    RETRY_DELAY_FIELD_NUMBER: _ClassVar[int]
    RETRY_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    RETRY_DELAY_MAX_FIELD_NUMBER: _ClassVar[int]
    RETRY_JITTER_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGS_VALUE_FIELD_NUMBER: _ClassVar[int]
    VARS_VALUE_FIELD_NUMBER: _ClassVar[int]
    function_name: str
    task_name: str
    group_name: str
    uuid: str
    args: str
    vars: str
    enabled: bool
    start_time: _timestamp_pb2.Timestamp
    next_run_time: _timestamp_pb2.Timestamp
    stop_time: _timestamp_pb2.Timestamp
    repeats: int
    retry_failed: int
    period: int
    prevent_drift: bool
    cronline: str
    timeout: int
    sync_output: int
    immediate: bool
    broadcast: bool
    priority: int
    discard_results: bool
    retry_delay: float
    retry_backoff: float
    retry_delay_max: float
    retry_jitter: float
    command: Command
    args_value: _struct_pb2.ListValue
    vars_value: _struct_pb2.Struct
    def __init__(self, function_name: _Optional[str] = ..., task_name: _Optional[str] = ..., group_name: _Optional[str] = ..., uuid: _Optional[str] = ..., args: _Optional[str] = ..., vars: _Optional[str] = ..., enabled: _Optional[bool] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_run_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stop_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., repeats: _Optional[int] = ..., retry_failed: _Optional[int] = ..., period: _Optional[int] = ..., prevent_drift: _Optional[bool] = ..., cronline: _Optional[str] = ..., timeout: _Optional[int] = ..., sync_output: _Optional[int] = ..., immediate: _Optional[bool] = ..., broadcast: _Optional[bool] = ..., priority: _Optional[int] = ..., discard_results: _Optional[bool] = ..., retry_delay: _Optional[float] = ..., retry_backoff: _Optional[float] = ..., retry_delay_max: _Optional[float] = ..., retry_jitter: _Optional[float] = ..., command: _Optional[_Union[Command, _Mapping]] = ..., args_value: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ..., vars_value: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("id", "uuid", "task_name", "group_name", "status", "function_name", "args", "vars", "enabled", "start_time", "next_run_time", "stop_time", "repeats", "retry_failed", "period", "prevent_drift", "cronline", "timeout", "sync_output", "times_run", "times_failed", "last_run_time", "assigned_worker_name", "broadcast", "priority", "discard_results", "attempt", "lost_count", "stop_requested", "retry_delay", "retry_backoff", "retry_delay_max", "retry_jitter", "broadcast_parent", "target_worker_name", "command", "args_value", "vars_value", "finished_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    VARS_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    NEXT_RUN_TIME_FIELD_NUMBER: _ClassVar[int]
    STOP_TIME_FIELD_NUMBER: _ClassVar[int]
    REPEATS_FIELD_NUMBER: _ClassVar[int]
    RETRY_FAILED_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    PREVENT_DRIFT_FIELD_NUMBER: _ClassVar[int]
    CRONLINE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    SYNC_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    TIMES_RUN_FIELD_NUMBER: _ClassVar[int]
    TIMES_FAILED_FIELD_NUMBER: _ClassVar[int]
    LAST_RUN_TIME_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_WORKER_NAME_FIELD_NUMBER: _ClassVar[int]
    BROADCAST_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DISCARD_RESULTS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    LOST_COUNT_FIELD_NUMBER: _ClassVar[int]
    STOP_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    RETRY_DELAY_FIELD_NUMBER: _ClassVar[int]
    RETRY_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    RETRY_DELAY_MAX_FIELD_NUMBER: _ClassVar[int]
    RETRY_JITTER_FIELD_NUMBER: _ClassVar[int]
    BROADCAST_PARENT_FIELD_NUMBER: _ClassVar[int]
    TARGET_WORKER_NAME_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGS_VALUE_FIELD_NUMBER: _ClassVar[int]
    VARS_VALUE_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    id: int
    uuid: str
    task_name: str
    group_name: str
    status: TaskStatus
    function_name: str
    args: str
    vars: str
    enabled: bool
    start_time: _timestamp_pb2.Timestamp
    next_run_time: _timestamp_pb2.Timestamp
    stop_time: _timestamp_pb2.Timestamp
    repeats: int
    retry_failed: int
    period: int
    prevent_drift: bool
    cronline: str
    timeout: int
    sync_output: int
    times_run: int
    times_failed: int
    last_run_time: _timestamp_pb2.Timestamp
    assigned_worker_name: str
    broadcast: bool
    priority: int
    discard_results: bool
    attempt: int
    lost_count: int
    stop_requested: bool
    retry_delay: float
    retry_backoff: float
    retry_delay_max: float
    retry_jitter: float
    broadcast_parent: int
    target_worker_name: str
    command: Command
    args_value: _struct_pb2.ListValue
    vars_value: _struct_pb2.Struct
    finished_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., uuid: _Optional[str] = ..., task_name: _Optional[str] = ..., group_name: _Optional[str] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., function_name: _Optional[str] = ..., args: _Optional[str] = ..., vars: _Optional[str] = ..., enabled: _Optional[bool] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_run_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stop_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., repeats: _Optional[int] = ..., retry_failed: _Optional[int] = ..., period: _Optional[int] = ..., prevent_drift: _Optional[bool] = ..., cronline: _Optional[str] = ..., timeout: _Optional[int] = ..., sync_output: _Optional[int] = ..., times_run: _Optional[int] = ..., times_failed: _Optional[int] = ..., last_run_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., assigned_worker_name: _Optional[str] = ..., broadcast: _Optional[bool] = ..., priority: _Optional[int] = ..., discard_results: _Optional[bool] = ..., attempt: _Optional[int] = ..., lost_count: _Optional[int] = ..., stop_requested: _Optional[bool] = ..., retry_delay: _Optional[float] = ..., retry_backoff: _Optional[float] = ..., retry_delay_max: _Optional[float] = ..., retry_jitter: _Optional[float] = ..., broadcast_parent: _Optional[int] = ..., target_worker_name: _Optional[str] = ..., command: _Optional[_Union[Command, _Mapping]] = ..., args_value: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ..., vars_value: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("id", "task_id", "attempt", "status", "start_time", "stop_time", "run_output", "run_result", "traceback", "worker_name", "result_value")
    ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    STOP_TIME_FIELD_NUMBER: _ClassVar[int]
    RUN_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RUN_RESULT_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    WORKER_NAME_FIELD_NUMBER: _ClassVar[int]
    RESULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    id: int
    task_id: int
    attempt: int
    status: RunStatus
    start_time: _timestamp_pb2.Timestamp
    stop_time: _timestamp_pb2.Timestamp
    run_output: str
    run_result: str
    traceback: str
    worker_name: str
    result_value: _struct_pb2.Value
    def __init__(self, id: _Optional[int] = ..., task_id: _Optional[int] = ..., attempt: _Optional[int] = ..., status: _Optional[_Union[RunStatus, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stop_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., run_output: _Optional[str] = ..., run_result: _Optional[str] = ..., traceback: _Optional[str] = ..., worker_name: _Optional[str] = ..., result_value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class OutputChunk(_message.Message):
    __slots__ = ("task_id", "attempt", "seq", "data", "clear", "run_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CLEAR_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    attempt: int
    seq: int
    data: str
    clear: bool
    run_id: int
    def __init__(self, task_id: _Optional[int] = ..., attempt: _Optional[int] = ..., seq: _Optional[int] = ..., data: _Optional[str] = ..., clear: _Optional[bool] = ..., run_id: _Optional[int] = ...) -> None: ...

class Worker(_message.Message):
    __slots__ = ("worker_name", "status", "first_heartbeat", "last_heartbeat", "group_names", "functions", "capacity", "language", "alive", "running", "rss_bytes", "heartbeat", "hostname", "pid", "capabilities", "coordinator")
    WORKER_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FIRST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    GROUP_NAMES_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    worker_name: str
    status: WorkerStatus
    first_heartbeat: _timestamp_pb2.Timestamp
    last_heartbeat: _timestamp_pb2.Timestamp
    group_names: _containers.RepeatedScalarFieldContainer[str]
    functions: _containers.RepeatedScalarFieldContainer[str]
    capacity: int
    language: str
    alive: bool
    running: _containers.RepeatedScalarFieldContainer[int]
    rss_bytes: int
    heartbeat: float
    hostname: str
    pid: int
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    coordinator: str
    def __init__(self, worker_name: _Optional[str] = ..., status: _Optional[_Union[WorkerStatus, str]] = ..., first_heartbeat: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_heartbeat: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., group_names: _Optional[_Iterable[str]] = ..., functions: _Optional[_Iterable[str]] = ..., capacity: _Optional[int] = ..., language: _Optional[str] = ..., alive: _Optional[bool] = ..., running: _Optional[_Iterable[int]] = ..., rss_bytes: _Optional[int] = ..., heartbeat: _Optional[float] = ..., hostname: _Optional[str] = ..., pid: _Optional[int] = ..., capabilities: _Optional[_Iterable[str]] = ..., coordinator: _Optional[str] = ...) -> None: ...

class LeaseRef(_message.Message):
    __slots__ = ("task_id", "attempt")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    attempt: int
    def __init__(self, task_id: _Optional[int] = ..., attempt: _Optional[int] = ...) -> None: ...
