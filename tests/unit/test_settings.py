"""taskgrid/settings.py: command line > environment > config file > defaults, for the
coordinator's and the worker's parsers; bad values exit 2 with one line; the doc lists all."""

from __future__ import annotations

import pathlib

import pytest

from taskgrid import settings
from taskgrid.coordinator import config as cfg
from taskgrid.coordinator import main as coordinator_main
from taskgrid.worker import main as worker_main

ROOT = pathlib.Path(__file__).resolve().parents[2]


def coordinator(argv, environ=None, tmp_path=None, toml=None):
    if toml is not None:
        path = tmp_path / "taskgrid.toml"
        path.write_text(toml)
        argv = ["--config", str(path), *argv]
    return coordinator_main.parse_args(argv, environ or {})


def worker(argv, environ=None):
    return settings.parse(worker_main.build_parser(), "worker", argv, environ or {})


def test_defaults_without_anything():
    args = coordinator([])
    assert args.heartbeat == cfg.DEFAULT_HEARTBEAT_S
    assert args.max_lease_wait == cfg.DEFAULT_MAX_LEASE_WAIT_S
    assert args.log_level == "INFO" and args.log_format == "text" and args.durable is False


def test_precedence_command_line_over_environment_over_file(tmp_path):
    toml = ('[coordinator]\nheartbeat = 7\nmax_lease_wait = 4.5\nlog-level = "warning"\n'
            'durable = true\n[worker]\nheartbeat = 99\n')
    env = {"TASKGRID_HEARTBEAT": "5", "TASKGRID_LOG_LEVEL": "debug"}
    args = coordinator(["--heartbeat", "2"], env, tmp_path, toml)
    assert args.heartbeat == 2.0  # command line
    assert args.log_level == "DEBUG"  # environment over the file
    assert args.max_lease_wait == 4.5 and args.durable is True  # file over defaults
    args = coordinator([], env, tmp_path, toml)
    assert args.heartbeat == 5.0
    args = coordinator([], {}, tmp_path, toml)
    assert args.heartbeat == 7.0 and args.log_level == "WARNING"


def test_config_file_from_the_environment(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[worker]\ncoordinator = "h:1"\n')
    assert worker([], {"TASKGRID_CONFIG": str(path)}).coordinator == "h:1"


def test_worker_environment_names():
    env = {"TASKGRID_COORDINATOR": "a:1,b:2", "TASKGRID_TOKEN": "t0k3n",
           "TASKGRID_TLS_CA": "/ca.pem", "TASKGRID_CONCURRENCY": "4", "TASKGRID_TLS": "yes",
           "TASKGRID_ALLOW_COMMANDS": "0"}
    args = worker([], env)
    assert args.coordinator == "a:1,b:2" and args.token == "t0k3n" and args.tls_ca == "/ca.pem"
    assert args.concurrency == 4 and args.tls is True and args.allow_commands is False


def test_repeatable_flags_replace_rather_than_extend(tmp_path):
    env = {"TASKGRID_GROUP": "a, b"}
    assert worker([], env).groups == ["a", "b"]
    assert worker(["--group", "c"], env).groups == ["c"]
    path = tmp_path / "w.toml"
    path.write_text('[worker]\ngroup = ["x", "y"]\nallow-executable = "/bin/true"\n')
    args = worker(["--config", str(path)])
    assert args.groups == ["x", "y"] and args.executables == ["/bin/true"]
    assert worker(["--config", str(path)], env).groups == ["a", "b"]


@pytest.mark.parametrize(("argv", "env", "toml", "expected"), [
    (["--log-level", "foo"], {}, None, "--log-level"),
    ([], {"TASKGRID_HEARTBEAT": "abc"}, None, "TASKGRID_HEARTBEAT='abc': invalid float"),
    ([], {"TASKGRID_LOG_FORMAT": "xml"}, None, "invalid choice"),
    ([], {"TASKGRID_DURABLE": "maybe"}, None, "expected true or false"),
    ([], {}, "[coordinator\nx", "not valid TOML"),
    ([], {}, "[coordinator]\nnope = 1\n", "unknown key 'nope'"),
    ([], {}, "[coordinator]\ndurable = 'yes'\n", "expected true or false"),
    ([], {}, "[coordinator]\nheartbeat = [1]\n", "expected a string or a number"),
    ([], {}, "coordinator = 3\n", "must be a table"),
])
def test_bad_values_exit_2_with_one_line(tmp_path, capsys, argv, env, toml, expected):
    with pytest.raises(SystemExit) as info:
        coordinator(argv, env, tmp_path, toml)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err
    assert err.startswith("taskgrid coordinator: error: ")


def test_missing_config_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        coordinator(["--config", str(tmp_path / "none.toml")])
    assert "cannot read" in capsys.readouterr().err


def test_worker_type_checks_apply_to_the_environment(capsys):
    with pytest.raises(SystemExit) as info:
        worker([], {"TASKGRID_CONCURRENCY": "0"})
    assert info.value.code == 2 and "must be at least 1" in capsys.readouterr().err


def test_coordinator_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        coordinator(["--help"])
    out = capsys.readouterr().out
    assert "(default: 3.0)" in out and "(default: text)" in out


def test_env_name():
    assert settings.env_name("--max-lease-wait") == "TASKGRID_MAX_LEASE_WAIT"


@pytest.mark.parametrize("parser", [coordinator_main.build_parser, worker_main.build_parser])
def test_the_doc_lists_every_setting(parser):
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for flag, _ in settings.settable(parser()):
        assert f"`{flag}`" in doc, f"docs/configuration.md does not list {flag}"
        assert f"`{settings.env_name(flag)}`" in doc, settings.env_name(flag)
    assert "`--config`" in doc and "`TASKGRID_CONFIG`" in doc


def test_config_flag_forms(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text("[coordinator]\nheartbeat = 8\n")
    assert coordinator([f"--config={path}"]).heartbeat == 8.0
    with pytest.raises(SystemExit):
        coordinator(["--conf", str(path)])
    assert "--config in full" in capsys.readouterr().err
