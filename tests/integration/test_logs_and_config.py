"""JSON logs of a real coordinator and worker (no token in them), and settings from the
environment and a config file, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from taskgrid.client import Scheduler, TaskStatus
from taskgrid.logs import SCHEMA_KEYS
from tests.support.processes import READY_LINE, Access
from tests.support.wait import wait_until

TOKENS = {"client": "client-token-logs-0123456789", "worker": "worker-token-logs-0123456789",
          "admin": "admin-token-logs-0123456789"}


def log_lines(text: str) -> list[str]:
    """The log lines of a child's log file: without the harness's `=== ...` header and the
    coordinator's stdout ready line (which is not a log record)."""
    return [line for line in text.splitlines()
            if line and not line.startswith("=== ") and not READY_LINE.match(line + "\n")]


def assert_json_lines(text: str) -> list[dict[str, object]]:
    records = []
    for line in log_lines(text):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(record, dict), line
        missing = [key for key in SCHEMA_KEYS if key not in record]
        assert not missing, f"{line!r} lacks {missing}"
        assert str(record["time"]).endswith("Z") and len(str(record["time"])) == 24, line
        records.append(record)
    assert records, "no log lines at all"
    return records


def test_json_logs_carry_the_schema_and_no_token(start_coordinator, start_worker, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("".join(f"{role} {token}\n" for role, token in TOKENS.items()))
    json_debug = ["--log-format", "json", "--log-level", "DEBUG"]
    coord = start_coordinator(extra_args=["--tokens-file", str(tokens), *json_debug],
                              access=Access(token=TOKENS["admin"]))
    worker = start_worker("json-worker", extra_args=json_debug,
                          env={"TASKGRID_TOKEN": TOKENS["worker"]})
    with Scheduler(coord.address, token=TOKENS["client"]) as s:
        queued = s.queue_task("add", [20, 22])
        assert queued.id is not None, queued.errors
        wait_until(lambda: s.task_status(queued.id).status is TaskStatus.COMPLETED,
                   timeout=20.0, desc="the task COMPLETED")
    worker.terminate()
    assert worker.wait(20.0) == 0, worker.log_tail()
    coord.stop()
    coordinator_records = assert_json_lines(coord.log_text())
    worker_records = assert_json_lines(worker.log_text())
    for text in (coord.log_text(), worker.log_text()):
        for token in TOKENS.values():
            assert token not in text
    # key=value pairs of the messages are fields
    registered = [r for r in coordinator_records if r["message"].startswith("worker registered")]
    assert registered and registered[0]["worker"] == "json-worker", coordinator_records
    assert any(r.get("task") == queued.id for r in worker_records), worker_records
    assert {r["logger"] for r in worker_records} & {"taskgrid.worker.agent",
                                                    "taskgrid.worker.main"}
    assert all(r["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
               for r in coordinator_records + worker_records)


def run_coordinator(args: list[str], env: dict[str, str], cwd: str,
                    ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taskgrid", "coordinator", *args],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=30)


def test_bad_settings_exit_2_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKGRID_")}
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[coordinator\nheartbeat = ")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[coordinator]\nno-such-flag = 1\n")
    cases = [
        (["--log-level", "foo"], {}, "--log-level"),
        ([], {"TASKGRID_HEARTBEAT": "abc"}, "TASKGRID_HEARTBEAT"),
        (["--config", str(bad_toml)], {}, "not valid TOML"),
        (["--config", str(unknown)], {}, "no-such-flag"),
        ([], {"TASKGRID_DURABLE": "maybe"}, "TASKGRID_DURABLE"),
    ]
    for args, extra, expected in cases:
        proc = run_coordinator(args, {**env, **extra}, str(tmp_path))
        assert proc.returncode == 2, (args, extra, proc)
        assert proc.stderr.count("\n") == 1 and expected in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_worker_bad_env_and_help_defaults(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKGRID_")}
    proc = subprocess.run([sys.executable, "-m", "taskgrid", "worker", "--tasks", "x"],
                          env={**env, "TASKGRID_CONCURRENCY": "0"}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc
    assert "TASKGRID_CONCURRENCY" in proc.stderr
    proc = run_coordinator(["--help"], env, str(tmp_path))
    assert proc.returncode == 0 and "(default: 3.0)" in proc.stdout


def test_coordinator_and_worker_from_config_file_and_environment(processes, tmp_path, db_url):
    config = tmp_path / "taskgrid.toml"
    config.write_text('[coordinator]\nlog-format = "json"\nmax_lease_wait = 2\n\n'
                      '[worker]\nlog_format = "json"\nconcurrency = 2\n')
    coord = processes.start_coordinator(
        db_url, env={"TASKGRID_CONFIG": str(config), "TASKGRID_LOG_LEVEL": "debug"})
    worker = processes.start_worker(coord.address, "from-file",
                                    extra_args=["--config", str(config)])
    assert worker.wait_registered().capacity == 2
    worker.terminate()
    assert worker.wait(20.0) == 0, worker.log_tail()
    coord.stop()
    assert any(r["level"] == "DEBUG" for r in assert_json_lines(coord.log_text()))
    assert assert_json_lines(worker.log_text())
