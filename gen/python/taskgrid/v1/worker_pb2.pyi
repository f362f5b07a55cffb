import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from taskgrid.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkerSession(_message.Message):
    __slots__ = ("worker_id", "session_token")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    worker_id: int
    session_token: str
    def __init__(self, worker_id: _Optional[int] = ..., session_token: _Optional[str] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("worker_name", "group_names", "functions", "capacity", "language", "capabilities", "heartbeat", "hostname", "pid", "version")
    WORKER_NAME_FIELD_NUMBER: _ClassVar[int]
    GROUP_NAMES_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    worker_name: str
    group_names: _containers.RepeatedScalarFieldContainer[str]
    functions: _containers.RepeatedScalarFieldContainer[str]
    capacity: int
    language: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    heartbeat: float
    hostname: str
    pid: int
    version: str
    def __init__(self, worker_name: _Optional[str] = ..., group_names: _Optional[_Iterable[str]] = ..., functions: _Optional[_Iterable[str]] = ..., capacity: _Optional[int] = ..., language: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., heartbeat: _Optional[float] = ..., hostname: _Optional[str] = ..., pid: _Optional[int] = ..., version: _Optional[str] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("session", "heartbeat", "status", "dead_after", "lease_takes_reports")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DEAD_AFTER_FIELD_NUMBER: _ClassVar[int]
    LEASE_TAKES_REPORTS_FIELD_NUMBER: _ClassVar[int]
    session: WorkerSession
    heartbeat: float
    status: _common_pb2.WorkerStatus
    dead_after: float
    lease_takes_reports: bool
    def __init__(self, session: _Optional[_Union[WorkerSession, _Mapping]] = ..., heartbeat: _Optional[float] = ..., status: _Optional[_Union[_common_pb2.WorkerStatus, str]] = ..., dead_after: _Optional[float] = ..., lease_takes_reports: _Optional[bool] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("ref", "run_id", "uuid", "task_name", "group_name", "function_name", "args", "vars", "timeout", "sync_output", "started", "start_time", "command", "traceparent")
    REF_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    VARS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    SYNC_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    ref: _common_pb2.LeaseRef
    run_id: int
    uuid: str
    task_name: str
    group_name: str
    function_name: str
    args: str
    vars: str
    timeout: int
    sync_output: int
    started: bool
    start_time: _timestamp_pb2.Timestamp
    command: _common_pb2.Command
    traceparent: str
    def __init__(self, ref: _Optional[_Union[_common_pb2.LeaseRef, _Mapping]] = ..., run_id: _Optional[int] = ..., uuid: _Optional[str] = ..., task_name: _Optional[str] = ..., group_name: _Optional[str] = ..., function_name: _Optional[str] = ..., args: _Optional[str] = ..., vars: _Optional[str] = ..., timeout: _Optional[int] = ..., sync_output: _Optional[int] = ..., started: _Optional[bool] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., command: _Optional[_Union[_common_pb2.Command, _Mapping]] = ..., traceparent: _Optional[str] = ...) -> None: ...

class LeaseRequest(_message.Message):
    __slots__ = ("session", "max_tasks", "wait_s", "prefetch", "reports")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    MAX_TASKS_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    session: WorkerSession
    max_tasks: int
    wait_s: float
    prefetch: bool
    reports: _containers.RepeatedCompositeFieldContainer[RunReport]
    def __init__(self, session: _Optional[_Union[WorkerSession, _Mapping]] = ..., max_tasks: _Optional[int] = ..., wait_s: _Optional[float] = ..., prefetch: _Optional[bool] = ..., reports: _Optional[_Iterable[_Union[RunReport, _Mapping]]] = ...) -> None: ...

class LeaseResponse(_message.Message):
    __slots__ = ("leases", "status", "stop", "stale")
    LEASES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    status: _common_pb2.WorkerStatus
    stop: _containers.RepeatedCompositeFieldContainer[_common_pb2.LeaseRef]
    stale: _containers.RepeatedCompositeFieldContainer[_common_pb2.LeaseRef]
    def __init__(self, leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ..., status: _Optional[_Union[_common_pb2.WorkerStatus, str]] = ..., stop: _Optional[_Iterable[_Union[_common_pb2.LeaseRef, _Mapping]]] = ..., stale: _Optional[_Iterable[_Union[_common_pb2.LeaseRef, _Mapping]]] = ...) -> None: ...

class StartRunsRequest(_message.Message):
    __slots__ = ("session", "leases")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    session: WorkerSession
    leases: _containers.RepeatedCompositeFieldContainer[_common_pb2.LeaseRef]
    def __init__(self, session: _Optional[_Union[WorkerSession, _Mapping]] = ..., leases: _Optional[_Iterable[_Union[_common_pb2.LeaseRef, _Mapping]]] = ...) -> None: ...

class StartRunsResponse(_message.Message):
    __slots__ = ("leases", "stale")
    LEASES_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    stale: _containers.RepeatedCompositeFieldContainer[_common_pb2.LeaseRef]
    def __init__(self, leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ..., stale: _Optional[_Iterable[_Union[_common_pb2.LeaseRef, _Mapping]]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("session", "running", "rss_bytes", "draining", "leaving")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    LEAVING_FIELD_NUMBER: _ClassVar[int]
    session: WorkerSession
    running: _containers.RepeatedCompositeFieldContainer[_common_pb2.LeaseRef]
    rss_bytes: int
    draining: bool
    leaving: bool
    def __init__(self, session: _Optional[_Union[WorkerSession, _Mapping]] = ..., running: _Optional[_Iterable[_Union[_common_pb2.LeaseRef, _Mapping]]] = ..., rss_bytes: _Optional[int] = ..., draining: _Optional[bool] = ..., leaving: _Optional[bool] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("status", "stop", "heartbeat", "stale")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.WorkerStatus
    stop: _containers.RepeatedCompositeFieldContainer[_common_pb2.LeaseRef]
    heartbeat: float
    stale: _containers.RepeatedCompositeFieldContainer[_common_pb2.LeaseRef]
    def __init__(self, status: _Optional[_Union[_common_pb2.WorkerStatus, str]] = ..., stop: _Optional[_Iterable[_Union[_common_pb2.LeaseRef, _Mapping]]] = ..., heartbeat: _Optional[float] = ..., stale: _Optional[_Iterable[_Union[_common_pb2.LeaseRef, _Mapping]]] = ...) -> None: ...

class SendOutputRequest(_message.Message):
    __slots__ = ("session", "chunks")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    session: WorkerSession
    chunks: _containers.RepeatedCompositeFieldContainer[_common_pb2.OutputChunk]
    def __init__(self, session: _Optional[_Union[WorkerSession, _Mapping]] = ..., chunks: _Optional[_Iterable[_Union[_common_pb2.OutputChunk, _Mapping]]] = ...) -> None: ...

class SendOutputResponse(_message.Message):
    __slots__ = ("stale",)
    STALE_FIELD_NUMBER: _ClassVar[int]
    stale: _containers.RepeatedCompositeFieldContainer[_common_pb2.LeaseRef]
    def __init__(self, stale: _Optional[_Iterable[_Union[_common_pb2.LeaseRef, _Mapping]]] = ...) -> None: ...

class RunReport(_message.Message):
    __slots__ = ("ref", "status", "result", "traceback", "output")
    REF_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ref: _common_pb2.LeaseRef
    status: _common_pb2.RunStatus
    result: str
    traceback: str
    output: _containers.RepeatedCompositeFieldContainer[_common_pb2.OutputChunk]
    def __init__(self, ref: _Optional[_Union[_common_pb2.LeaseRef, _Mapping]] = ..., status: _Optional[_Union[_common_pb2.RunStatus, str]] = ..., result: _Optional[str] = ..., traceback: _Optional[str] = ..., output: _Optional[_Iterable[_Union[_common_pb2.OutputChunk, _Mapping]]] = ...) -> None: ...

class ReportRequest(_message.Message):
    __slots__ = ("session", "reports")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    session: WorkerSession
    reports: _containers.RepeatedCompositeFieldContainer[RunReport]
    def __init__(self, session: _Optional[_Union[WorkerSession, _Mapping]] = ..., reports: _Optional[_Iterable[_Union[RunReport, _Mapping]]] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ("stale",)
    STALE_FIELD_NUMBER: _ClassVar[int]
    stale: _containers.RepeatedCompositeFieldContainer[_common_pb2.LeaseRef]
    def __init__(self, stale: _Optional[_Iterable[_Union[_common_pb2.LeaseRef, _Mapping]]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("session", "leases")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    session: WorkerSession
    leases: _containers.RepeatedCompositeFieldContainer[_common_pb2.LeaseRef]
    def __init__(self, session: _Optional[_Union[WorkerSession, _Mapping]] = ..., leases: _Optional[_Iterable[_Union[_common_pb2.LeaseRef, _Mapping]]] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("stale",)
    STALE_FIELD_NUMBER: _ClassVar[int]
    stale: _containers.RepeatedCompositeFieldContainer[_common_pb2.LeaseRef]
    def __init__(self, stale: _Optional[_Iterable[_Union[_common_pb2.LeaseRef, _Mapping]]] = ...) -> None: ...
