"""The gRPC floor: taskgrid's ClientService.QueueTask answered with no work at all.

    python bench/peers/floor_server.py

Serves `QueueTask` on a free loopback port with the same grpcio, the same generated protobuf
messages and the same asyncio server as the coordinator, but no validation, no database and
no interceptor: each call returns the next id and a fixed uuid. bench/compare.py runs its
50-producer burst against it (system `grpc-floor`), so the coordinator's cost per QueueTask
call can be read beside what grpcio alone costs on the same machine in the same run. Prints
`listening on ADDRESS` like the coordinator; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import itertools
import signal

import grpc

from taskgrid.v1 import client_pb2, client_pb2_grpc


class Floor(client_pb2_grpc.ClientServiceServicer):
    """QueueTask with nothing behind it."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    async def QueueTask(self, request: client_pb2.QueueTaskRequest,  # noqa: N802 - gRPC name
                        context: grpc.aio.ServicerContext) -> client_pb2.QueueTaskResponse:
        return client_pb2.QueueTaskResponse(id=next(self._ids), uuid="floor")


async def main() -> None:
    server = grpc.aio.server()
    client_pb2_grpc.add_ClientServiceServicer_to_server(Floor(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"floor listening on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(None)


if __name__ == "__main__":
    asyncio.run(main())
