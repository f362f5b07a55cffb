"""Servicer helpers of the client API that need no server: page tokens, answers that fit."""

from __future__ import annotations

import pytest

from taskgrid.coordinator.errors import InvalidRequestError
from taskgrid.coordinator.servicers import convert
from taskgrid.coordinator.servicers.client import _page_token
from taskgrid.v1 import client_pb2, common_pb2


@pytest.mark.parametrize("token", ["", "1", "007", str(2**63 - 1)])
def test_page_tokens_from_previous_pages_are_accepted(token):
    assert _page_token(token) == token


@pytest.mark.parametrize("token", ["\u00b2", "\u0661\u0662", "-1", "+1", " 1", "1 ", "1e3",
                                   "0x1", str(2**63), "9" * 4000, "zz"])
def test_a_page_token_that_is_not_a_small_decimal_is_invalid_argument_naming_it(token):
    # '²'.isdigit() is True but int('²') raises; 2**63 overflows the database's bigint.
    with pytest.raises(InvalidRequestError) as info:
        _page_token(token)
    assert info.value.field == "page_token"


def test_an_unknown_status_names_its_field():
    with pytest.raises(InvalidRequestError) as info:
        convert.status_name(99, common_pb2.TaskStatus, "TASK_STATUS_", "statuses[2]")
    assert str(info.value).startswith("statuses[2]: unknown value 99")


def _reply(*outputs: str, traceback: str = "") -> client_pb2.GetTaskResponse:
    return client_pb2.GetTaskResponse(task=common_pb2.Task(id=1), runs=[
        common_pb2.Run(id=i + 1, run_output=o, traceback=traceback) for i, o in enumerate(outputs)])


def test_run_output_is_cut_oldest_first_to_fit_the_answer_keeping_its_end():
    reply = _reply("a" * 5000 + "END1", "b" * 5000 + "END2")
    assert convert.fit_runs(reply, 7000)
    assert reply.ByteSize() <= 7000
    first, second = reply.runs
    assert first.run_output.startswith("[taskgrid: ") and first.run_output.endswith("END1")
    assert second.run_output.endswith("END2")


def test_an_answer_that_fits_is_left_alone_and_one_that_cannot_is_reported():
    reply = _reply("small")
    assert convert.fit_runs(reply, 10_000) and reply.runs[0].run_output == "small"
    huge = _reply("x" * 100)
    huge.runs[0].run_result = "1" * 10_000  # results are JSON: never cut
    assert not convert.fit_runs(huge, 5000)


def test_tracebacks_are_cut_after_outputs():
    reply = _reply("o" * 100, traceback="t" * 9000 + "LAST")
    assert convert.fit_runs(reply, 4000)
    assert reply.runs[0].traceback.endswith("LAST") and reply.ByteSize() <= 4000
