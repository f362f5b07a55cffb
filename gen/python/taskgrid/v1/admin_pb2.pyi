from taskgrid.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListWorkersRequest(_message.Message):
    __slots__ = ("include_dead",)
    INCLUDE_DEAD_FIELD_NUMBER: _ClassVar[int]
    include_dead: bool
    def __init__(self, include_dead: _Optional[bool] = ...) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[_common_pb2.Worker]
    def __init__(self, workers: _Optional[_Iterable[_Union[_common_pb2.Worker, _Mapping]]] = ...) -> None: ...

class SetWorkerStatusRequest(_message.Message):
    __slots__ = ("status", "group_names", "worker_name")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    GROUP_NAMES_FIELD_NUMBER: _ClassVar[int]
    WORKER_NAME_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.WorkerStatus
    group_names: _containers.RepeatedScalarFieldContainer[str]
    worker_name: str
    def __init__(self, status: _Optional[_Union[_common_pb2.WorkerStatus, str]] = ..., group_names: _Optional[_Iterable[str]] = ..., worker_name: _Optional[str] = ...) -> None: ...

class SetWorkerStatusResponse(_message.Message):
    __slots__ = ("worker_names",)
    WORKER_NAMES_FIELD_NUMBER: _ClassVar[int]
    worker_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, worker_names: _Optional[_Iterable[str]] = ...) -> None: ...
