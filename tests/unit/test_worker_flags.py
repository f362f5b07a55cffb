"""The Python worker's flags and its DISABLED long-poll, without processes.

tests/integration/test_worker_ergonomics.py checks the same rules against the Go worker and a
real coordinator; these pin the Python side down step by step.
"""

from __future__ import annotations

import pytest

from taskgrid import settings
from taskgrid.v1 import common_pb2, worker_pb2
from taskgrid.worker import main as worker_main
from taskgrid.worker.agent import Agent
from taskgrid.worker.channel import load_security
from taskgrid.worker.command import policy_from_flags
from tests.unit.test_worker_agent import FakeStub, agent, make_agent, stub  # noqa: F401

DISABLED = common_pb2.WORKER_STATUS_DISABLED
ACTIVE = common_pb2.WORKER_STATUS_ACTIVE


def parse(*argv: str):
    return settings.parse(worker_main.build_parser(), "worker", list(argv), environ={})


def test_allow_executable_implies_allow_commands():
    args = parse("--allow-executable", "/bin/sh")
    assert not args.allow_commands and args.executables == ["/bin/sh"]
    policy = policy_from_flags(args.allow_commands, args.executables)
    assert policy.allowed and policy.executables
    assert not policy_from_flags(*(lambda a: (a.allow_commands, a.executables))(
        parse("--tasks", "m"))).allowed


def test_tls_server_name_implies_tls_and_names_the_certificate():
    args = parse("--tasks", "m", "--tls-server-name", "coord.test")
    assert args.tls_server_name == "coord.test"
    security = load_security("127.0.0.1:1", server_name=args.tls_server_name, environ={})
    assert security.tls and security.server_name == "coord.test"
    assert load_security("127.0.0.1:1", environ={}).server_name is None


def test_a_worker_with_nothing_to_run_refuses_with_one_line(capsys, monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("TASKGRID_"):
            monkeypatch.delenv(name)
    with pytest.raises(SystemExit) as exit_info:
        worker_main.main(["--coordinator", "127.0.0.1:1"])
    assert exit_info.value.code == worker_main.EXIT_USAGE == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing to run" in err and "--allow-commands" in err


def test_a_disabled_worker_still_long_polls_lease(agent: Agent, stub: FakeStub):  # noqa: F811
    agent._apply_status(DISABLED)
    with agent._cond:
        assert agent._may_lease()  # the coordinator holds this call until resume
    stub.answer("Lease", worker_pb2.LeaseResponse(status=DISABLED))
    assert agent.lease_once()
    request = stub.requests["Lease"][-1]
    assert request.wait_s == agent._heartbeat and request.max_tasks == 4
    # answered at once, still DISABLED, nothing said: an older coordinator; ask again only
    # after a heartbeat instead of spinning
    with agent._cond:
        assert not agent._may_lease()
        assert agent._quiet_until > 0
    # the heartbeat brings ACTIVE: leasing goes on at once
    agent._apply_status(ACTIVE)
    with agent._cond:
        assert agent._may_lease()


def test_a_held_disabled_lease_ends_with_active_leases(agent: Agent, stub: FakeStub):  # noqa: F811
    agent._apply_status(DISABLED)
    stub.answer("Lease", worker_pb2.LeaseResponse(
        status=ACTIVE, leases=[worker_pb2.Lease(ref=common_pb2.LeaseRef(task_id=5, attempt=1),
                                                run_id=5, function_name="f", timeout=60,
                                                started=True)]))
    assert agent.lease_once()
    assert agent._status == ACTIVE and (5, 1) in agent._held
    assert agent._quiet_until == 0.0
    # a held call that ends with a stop request is no sign of an older coordinator either
    agent._apply_status(DISABLED)
    with agent._cond:
        agent._disabled_poll(worker_pb2.LeaseResponse(
            status=DISABLED, stop=[common_pb2.LeaseRef(task_id=5, attempt=1)]), 0.0)
        assert agent._quiet_until == 0.0
        agent._disabled_poll(worker_pb2.LeaseResponse(status=DISABLED), agent._heartbeat)
        assert agent._quiet_until == 0.0  # it waited its wait_s: a coordinator that holds
