#!/usr/bin/env python3
"""taskgrid-healthcheck: ask a coordinator's grpc.health.v1 service whether it is SERVING.

Used by the compose file's healthchecks and the Kubernetes exec probes (the kubelet's own
gRPC probe speaks plaintext only, so it cannot check a coordinator that serves TLS).

    taskgrid-healthcheck [ADDR] [--tls-ca PEM] [--server-name NAME] [--service S] [--timeout S]
                         [--any-status]

ADDR defaults to 127.0.0.1:50051. TLS is used when a CA is given (--tls-ca or
$TASKGRID_TLS_CA); --tls-cert/--tls-key ($TASKGRID_TLS_CERT/KEY) add a client certificate
for a coordinator that requires one. --server-name is the name to check the certificate
against (default: the host of ADDR). Exit codes: 0 SERVING, 1 any other status, 2 no answer.
With --any-status, any answer is 0: a liveness check (the process serves gRPC) rather than a
readiness check (it can reach its database).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def main(argv: list[str] | None = None) -> int:
    """Run one health check and return its exit code."""
    p = argparse.ArgumentParser(prog="taskgrid-healthcheck")
    p.add_argument("addr", nargs="?", default="127.0.0.1:50051")
    p.add_argument("--tls-ca", default=os.environ.get("TASKGRID_TLS_CA"))
    p.add_argument("--tls-cert", default=os.environ.get("TASKGRID_TLS_CERT"))
    p.add_argument("--tls-key", default=os.environ.get("TASKGRID_TLS_KEY"))
    p.add_argument("--server-name", default=None)
    p.add_argument("--service", default="")
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--any-status", action="store_true",
                   help="exit 0 on any answer (liveness), not only on SERVING (readiness)")
    args = p.parse_args(argv)
    if args.tls_ca:
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(args.tls_ca), private_key=_read(args.tls_key),
            certificate_chain=_read(args.tls_cert))
        options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
        channel = grpc.secure_channel(args.addr, creds, options=options)
    else:
        channel = grpc.insecure_channel(args.addr)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"{args.addr}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.addr}: {status}")
    return 0 if args.any_status or reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
