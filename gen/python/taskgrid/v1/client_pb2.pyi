import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from taskgrid.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskRef(_message.Message):
    __slots__ = ("id", "uuid")
    ID_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    id: int
    uuid: str
    def __init__(self, id: _Optional[int] = ..., uuid: _Optional[str] = ...) -> None: ...

class QueueTaskRequest(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _common_pb2.TaskSpec
    def __init__(self, task: _Optional[_Union[_common_pb2.TaskSpec, _Mapping]] = ...) -> None: ...

class QueueTaskResponse(_message.Message):
    __slots__ = ("id", "uuid", "errors")
    class ErrorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    id: int
    uuid: str
    errors: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[int] = ..., uuid: _Optional[str] = ..., errors: _Optional[_Mapping[str, str]] = ...) -> None: ...

class QueueTasksRequest(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[_common_pb2.TaskSpec]
    def __init__(self, tasks: _Optional[_Iterable[_Union[_common_pb2.TaskSpec, _Mapping]]] = ...) -> None: ...

class QueueTasksResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[QueueTaskResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[QueueTaskResponse, _Mapping]]] = ...) -> None: ...

class JobRef(_message.Message):
    __slots__ = ("index", "task_id")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    index: int
    task_id: int
    def __init__(self, index: _Optional[int] = ..., task_id: _Optional[int] = ...) -> None: ...

class JobEdge(_message.Message):
    __slots__ = ("task", "waits_for")
    TASK_FIELD_NUMBER: _ClassVar[int]
    WAITS_FOR_FIELD_NUMBER: _ClassVar[int]
    task: JobRef
    waits_for: JobRef
    def __init__(self, task: _Optional[_Union[JobRef, _Mapping]] = ..., waits_for: _Optional[_Union[JobRef, _Mapping]] = ...) -> None: ...

class QueueJobRequest(_message.Message):
    __slots__ = ("job_name", "tasks", "edges")
    JOB_NAME_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    job_name: str
    tasks: _containers.RepeatedCompositeFieldContainer[_common_pb2.TaskSpec]
    edges: _containers.RepeatedCompositeFieldContainer[JobEdge]
    def __init__(self, job_name: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[_common_pb2.TaskSpec, _Mapping]]] = ..., edges: _Optional[_Iterable[_Union[JobEdge, _Mapping]]] = ...) -> None: ...

class JobLayer(_message.Message):
    __slots__ = ("task_ids",)
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    task_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, task_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class QueueJobResponse(_message.Message):
    __slots__ = ("results", "errors", "layers")
    class ErrorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[QueueTaskResponse]
    errors: _containers.ScalarMap[str, str]
    layers: _containers.RepeatedCompositeFieldContainer[JobLayer]
    def __init__(self, results: _Optional[_Iterable[_Union[QueueTaskResponse, _Mapping]]] = ..., errors: _Optional[_Mapping[str, str]] = ..., layers: _Optional[_Iterable[_Union[JobLayer, _Mapping]]] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("ref", "all_runs")
    REF_FIELD_NUMBER: _ClassVar[int]
    ALL_RUNS_FIELD_NUMBER: _ClassVar[int]
    ref: TaskRef
    all_runs: bool
    def __init__(self, ref: _Optional[_Union[TaskRef, _Mapping]] = ..., all_runs: _Optional[bool] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("task", "runs", "waiting_reason", "waiting_for")
    TASK_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    WAITING_REASON_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_FIELD_NUMBER: _ClassVar[int]
    task: _common_pb2.Task
    runs: _containers.RepeatedCompositeFieldContainer[_common_pb2.Run]
    waiting_reason: str
    waiting_for: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, task: _Optional[_Union[_common_pb2.Task, _Mapping]] = ..., runs: _Optional[_Iterable[_Union[_common_pb2.Run, _Mapping]]] = ..., waiting_reason: _Optional[str] = ..., waiting_for: _Optional[_Iterable[int]] = ...) -> None: ...

class WaitTaskRequest(_message.Message):
    __slots__ = ("ref", "timeout")
    REF_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    ref: TaskRef
    timeout: float
    def __init__(self, ref: _Optional[_Union[TaskRef, _Mapping]] = ..., timeout: _Optional[float] = ...) -> None: ...

class WaitTaskResponse(_message.Message):
    __slots__ = ("done", "task", "run")
    DONE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    done: bool
    task: _common_pb2.Task
    run: _common_pb2.Run
    def __init__(self, done: _Optional[bool] = ..., task: _Optional[_Union[_common_pb2.Task, _Mapping]] = ..., run: _Optional[_Union[_common_pb2.Run, _Mapping]] = ...) -> None: ...

class TaskSelector(_message.Message):
    __slots__ = ("refs", "statuses", "group_name", "function_name", "task_name", "finished_before", "all")
    REFS_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    FINISHED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    refs: _containers.RepeatedCompositeFieldContainer[TaskRef]
    statuses: _containers.RepeatedScalarFieldContainer[_common_pb2.TaskStatus]
    group_name: str
    function_name: str
    task_name: str
    finished_before: _timestamp_pb2.Timestamp
    all: bool
    def __init__(self, refs: _Optional[_Iterable[_Union[TaskRef, _Mapping]]] = ..., statuses: _Optional[_Iterable[_Union[_common_pb2.TaskStatus, str]]] = ..., group_name: _Optional[str] = ..., function_name: _Optional[str] = ..., task_name: _Optional[str] = ..., finished_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., all: _Optional[bool] = ...) -> None: ...

class RequeueTasksRequest(_message.Message):
    __slots__ = ("select", "keep_counters")
    SELECT_FIELD_NUMBER: _ClassVar[int]
    KEEP_COUNTERS_FIELD_NUMBER: _ClassVar[int]
    select: TaskSelector
    keep_counters: bool
    def __init__(self, select: _Optional[_Union[TaskSelector, _Mapping]] = ..., keep_counters: _Optional[bool] = ...) -> None: ...

class SetTasksEnabledRequest(_message.Message):
    __slots__ = ("select", "enabled")
    SELECT_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    select: TaskSelector
    enabled: bool
    def __init__(self, select: _Optional[_Union[TaskSelector, _Mapping]] = ..., enabled: _Optional[bool] = ...) -> None: ...

class UpdateTaskRequest(_message.Message):
    __slots__ = ("ref", "task", "update_mask")
    REF_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    ref: TaskRef
    task: _common_pb2.TaskSpec
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, ref: _Optional[_Union[TaskRef, _Mapping]] = ..., task: _Optional[_Union[_common_pb2.TaskSpec, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateTaskResponse(_message.Message):
    __slots__ = ("task", "errors")
    class ErrorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    task: _common_pb2.Task
    errors: _containers.ScalarMap[str, str]
    def __init__(self, task: _Optional[_Union[_common_pb2.Task, _Mapping]] = ..., errors: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DeleteTasksRequest(_message.Message):
    __slots__ = ("select",)
    SELECT_FIELD_NUMBER: _ClassVar[int]
    select: TaskSelector
    def __init__(self, select: _Optional[_Union[TaskSelector, _Mapping]] = ...) -> None: ...

class TasksChangedResponse(_message.Message):
    __slots__ = ("count", "task_ids")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    count: int
    task_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, count: _Optional[int] = ..., task_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("statuses", "group_name", "function_name", "task_name", "page_size", "page_token", "uuid", "created_after", "created_before", "oldest_first")
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    OLDEST_FIRST_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedScalarFieldContainer[_common_pb2.TaskStatus]
    group_name: str
    function_name: str
    task_name: str
    page_size: int
    page_token: str
    uuid: str
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    oldest_first: bool
    def __init__(self, statuses: _Optional[_Iterable[_Union[_common_pb2.TaskStatus, str]]] = ..., group_name: _Optional[str] = ..., function_name: _Optional[str] = ..., task_name: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., uuid: _Optional[str] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., oldest_first: _Optional[bool] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_name", "task_id")
    JOB_NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    job_name: str
    task_id: int
    def __init__(self, job_name: _Optional[str] = ..., task_id: _Optional[int] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job_name", "tasks", "edges", "edge_met")
    JOB_NAME_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    EDGE_MET_FIELD_NUMBER: _ClassVar[int]
    job_name: str
    tasks: _containers.RepeatedCompositeFieldContainer[_common_pb2.Task]
    edges: _containers.RepeatedCompositeFieldContainer[JobEdge]
    edge_met: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, job_name: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[_common_pb2.Task, _Mapping]]] = ..., edges: _Optional[_Iterable[_Union[JobEdge, _Mapping]]] = ..., edge_met: _Optional[_Iterable[bool]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusCount(_message.Message):
    __slots__ = ("status", "group_name", "count")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.TaskStatus
    group_name: str
    count: int
    def __init__(self, status: _Optional[_Union[_common_pb2.TaskStatus, str]] = ..., group_name: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class MinuteCount(_message.Message):
    __slots__ = ("minute", "completed", "failed", "other")
    MINUTE_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    OTHER_FIELD_NUMBER: _ClassVar[int]
    minute: _timestamp_pb2.Timestamp
    completed: int
    failed: int
    other: int
    def __init__(self, minute: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed: _Optional[int] = ..., failed: _Optional[int] = ..., other: _Optional[int] = ...) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("counts", "last_hour", "oldest_due", "computed_at")
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    LAST_HOUR_FIELD_NUMBER: _ClassVar[int]
    OLDEST_DUE_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_AT_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedCompositeFieldContainer[StatusCount]
    last_hour: _containers.RepeatedCompositeFieldContainer[MinuteCount]
    oldest_due: _common_pb2.Task
    computed_at: _timestamp_pb2.Timestamp
    def __init__(self, counts: _Optional[_Iterable[_Union[StatusCount, _Mapping]]] = ..., last_hour: _Optional[_Iterable[_Union[MinuteCount, _Mapping]]] = ..., oldest_due: _Optional[_Union[_common_pb2.Task, _Mapping]] = ..., computed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "next_page_token")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[_common_pb2.Task]
    next_page_token: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[_common_pb2.Task, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StopTaskRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: TaskRef
    def __init__(self, ref: _Optional[_Union[TaskRef, _Mapping]] = ...) -> None: ...

class StopTaskResponse(_message.Message):
    __slots__ = ("stopped", "status", "message")
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    stopped: bool
    status: _common_pb2.TaskStatus
    message: str
    def __init__(self, stopped: _Optional[bool] = ..., status: _Optional[_Union[_common_pb2.TaskStatus, str]] = ..., message: _Optional[str] = ...) -> None: ...

class WatchTaskRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: TaskRef
    def __init__(self, ref: _Optional[_Union[TaskRef, _Mapping]] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("task", "output")
    TASK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    task: _common_pb2.Task
    output: _common_pb2.OutputChunk
    def __init__(self, task: _Optional[_Union[_common_pb2.Task, _Mapping]] = ..., output: _Optional[_Union[_common_pb2.OutputChunk, _Mapping]] = ...) -> None: ...
