"""The standard gRPC health and reflection services on a real coordinator.

Health answers probes with no credentials and says SERVING only while the database
answers; reflection describes the whole API, so a client with no proto files (grpcurl, a
dynamic stub) can call it.
"""

from __future__ import annotations

import signal
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.support.processes import Access
from tests.support.rpc import connect, status_of
from tests.support.wait import wait_until

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def check(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)


def test_health_is_serving_for_the_server_and_each_service(coordinator):
    for service in ("", "taskgrid.v1.ClientService", "taskgrid.v1.WorkerService",
                    "taskgrid.v1.AdminService"):
        assert check(coordinator.address, service) == SERVING
    with pytest.raises(grpc.RpcError) as info:
        check(coordinator.address, "no.such.Service")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_turns_not_serving_at_shutdown(coordinator):
    channel = grpc.insecure_channel(coordinator.address)
    try:
        stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert next(stream).status == SERVING
        coordinator.signal_group(signal.SIGTERM)
        assert next(stream).status == NOT_SERVING  # before the server stops taking calls
    finally:
        channel.close()
    assert coordinator.wait(15) == 0


@pytest.mark.postgres
def test_health_turns_not_serving_while_the_database_is_away(pg_cluster, pg_database,
                                                            processes):
    import psycopg

    coordinator = processes.start_coordinator(pg_cluster.url(pg_database))
    assert check(coordinator.address) == SERVING
    admin = psycopg.connect(**pg_cluster.connect_kwargs(), autocommit=True)
    try:
        admin.execute(f'ALTER DATABASE "{pg_database}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = %s", (pg_database,))
        wait_until(lambda: check(coordinator.address) == NOT_SERVING, timeout=15,
                   desc="NOT_SERVING during the outage")
    finally:
        admin.execute(f'ALTER DATABASE "{pg_database}" ALLOW_CONNECTIONS true')
        admin.close()
    wait_until(lambda: check(coordinator.address) == SERVING, timeout=20,
               desc="SERVING once the database answers again")


def reflect(channel: grpc.Channel, request: reflection_pb2.ServerReflectionRequest) -> Any:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    return next(iter(stub.ServerReflectionInfo(iter([request]), timeout=10)))


def test_reflection_lists_describes_and_drives_the_api_with_no_proto_files(coordinator):
    with grpc.insecure_channel(coordinator.address) as channel:
        listed = reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
        names = {s.name for s in listed.list_services_response.service}
        assert {"taskgrid.v1.ClientService", "taskgrid.v1.WorkerService",
                "taskgrid.v1.AdminService", "grpc.health.v1.Health",
                "grpc.reflection.v1alpha.ServerReflection"} <= names

        # Describe TaskSpec from what the server sends, not from the generated modules.
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        spec = pool.FindMessageTypeByName("taskgrid.v1.TaskSpec")
        assert {"function_name", "args", "timeout", "group_name"} <= set(spec.fields_by_name)

        # A dynamic stub, built from the reflected descriptors, queues a task.
        method = pool.FindServiceByName("taskgrid.v1.ClientService").FindMethodByName(
            "QueueTask")
        request_cls = message_factory.GetMessageClass(method.input_type)
        reply_cls = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary("/taskgrid.v1.ClientService/QueueTask",
                                   request_serializer=request_cls.SerializeToString,
                                   response_deserializer=reply_cls.FromString)
        request = json_format.ParseDict(
            {"task": {"functionName": "add", "args": "[2, 3]"}}, request_cls())
        reply = json_format.MessageToDict(call(request, timeout=10))
    task_id = int(reply["id"])
    stubs = connect(coordinator.address)
    try:
        assert status_of(stubs, task_id) == "QUEUED"
    finally:
        stubs.close()


def test_with_tokens_health_needs_none_and_reflection_needs_a_valid_one(tmp_path,
                                                                       start_coordinator):
    tokens = tmp_path / "tokens"
    tokens.write_text("client client-secret-0123456789\nadmin admin-secret-0123456789\n")
    coordinator = start_coordinator(extra_args=["--tokens-file", str(tokens)],
                                    access=Access(token="admin-secret-0123456789"))
    assert check(coordinator.address) == SERVING  # a probe sends no credentials
    with grpc.insecure_channel(coordinator.address) as channel:
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as info:
            reflect(channel, request)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        bearer = [("authorization", "Bearer client-secret-0123456789")]
        answer = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=10,
                                                     metadata=bearer)))
        assert answer.list_services_response.service
