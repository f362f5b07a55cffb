"""Settings of `taskgrid coordinator` and `taskgrid worker`: flags, environment, config file.

Every long flag `--some-flag` of a parser can also be set by the environment variable
`TASKGRID_SOME_FLAG` and by the key `some-flag` (or `some_flag`) of the `[coordinator]` or
`[worker]` table of a TOML file named by `--config PATH` (or TASKGRID_CONFIG). Precedence:
command line > environment > config file > the parser's defaults. `parse` applies the
environment and the file as argparse defaults, then parses the command line, so argparse
itself keeps the command line on top.

Values are checked like the flag's own (its type and choices); a bad one ends the program
with a one-line error and exit code 2. On/off flags take true/false, 1/0, yes/no or on/off
from the environment and booleans from the file; repeatable flags take a comma-separated
list from the environment and a list (or one string) from the file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

ENV_PREFIX = "TASKGRID_"
CONFIG_ENV = "TASKGRID_CONFIG"
EXIT_USAGE = 2
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(Exception):
    """A value from the environment or the config file that the flag does not accept."""


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    """Add --config PATH to `parser`."""
    parser.add_argument("--config", default=None, metavar="PATH",
                        help=f"TOML file of settings (also ${CONFIG_ENV}); see "
                             "docs/configuration.md")


def env_name(flag: str) -> str:
    """The environment variable of long flag `flag`: --max-lease-wait -> TASKGRID_MAX_LEASE_WAIT."""
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


def settable(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    """(long flag, action) of every flag of `parser` that settings may set, in help order."""
    found = []
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if not longs or action.dest in ("help", "config") or isinstance(
                action, argparse._VersionAction):
            continue
        found.append((longs[0], action))
    return found


def _is_flag(action: argparse.Action) -> bool:
    return isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)


def _is_list(action: argparse.Action) -> bool:
    return isinstance(action, argparse._AppendAction)


def _convert_one(action: argparse.Action, text: str) -> Any:
    convert = action.type if callable(action.type) else None
    try:
        value = convert(text) if convert else text
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        kind = getattr(convert, "__name__", "value")
        detail = str(exc) if isinstance(exc, argparse.ArgumentTypeError) else f"invalid {kind}"
        raise SettingsError(detail) from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise SettingsError(f"invalid choice (choose from {choices})")
    return value


def convert(action: argparse.Action, raw: Any, from_env: bool) -> Any:
    """`raw` (an environment string or a TOML value) as the value the flag would give."""
    if _is_flag(action):
        if from_env:
            word = str(raw).strip().lower()
            if word not in _TRUE | _FALSE:
                raise SettingsError("expected true or false")
            on = word in _TRUE
        elif isinstance(raw, bool):
            on = raw
        else:
            raise SettingsError("expected true or false")
        return on if isinstance(action, argparse._StoreTrueAction) else not on
    if _is_list(action):
        if from_env:
            items: list[Any] = [s.strip() for s in str(raw).split(",") if s.strip()]
        elif isinstance(raw, list):
            items = raw
        else:
            items = [raw]
        return [_convert_one(action, _text(item)) for item in items]
    return _convert_one(action, raw if from_env else _text(raw))


def _text(raw: Any) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise SettingsError("expected a string or a number")
    return str(raw)


def load_file(path: str, section: str) -> dict[str, Any]:
    """The `[section]` table of TOML file `path` (empty when the file has none)."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise SettingsError(f"cannot read {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"not valid TOML: {exc}") from None
    table = data.get(section, {})
    if not isinstance(table, dict):
        raise SettingsError(f"{section} must be a table ([{section}])")
    return table


def config_flag(argv: Sequence[str]) -> str | None:
    """The value of --config PATH or --config=PATH in `argv` (written in full), if any."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(list(argv))
    path: str | None = known.config
    return path


def resolve(parser: argparse.ArgumentParser, section: str, path: str | None,
            environ: Mapping[str, str]) -> dict[str, tuple[argparse.Action, Any]]:
    """Map dest -> (action, value) of every flag set by the environment or TOML file `path`.

    Raises:
        SettingsError: a bad value, key or file, the message naming where it came from.
    """
    flags = settable(parser)
    by_key = {}
    for flag, action in flags:
        for name in (flag[2:], flag[2:].replace("-", "_"), action.dest):
            by_key[name] = action
    values: dict[str, tuple[argparse.Action, Any]] = {}
    if path:
        where = f"config file {path}"
        try:
            table = load_file(path, section)
        except SettingsError as exc:
            raise SettingsError(f"{where}: {exc}") from None
        for key, raw in table.items():
            if key not in by_key:
                raise SettingsError(f"{where}: [{section}] has an unknown key {key!r}")
            action = by_key[key]
            try:
                values[action.dest] = (action, convert(action, raw, from_env=False))
            except SettingsError as exc:
                raise SettingsError(f"{where}: {key} = {raw!r}: {exc}") from None
    for flag, action in flags:
        name = env_name(flag)
        if name in environ:
            try:
                values[action.dest] = (action, convert(action, environ[name], from_env=True))
            except SettingsError as exc:
                raise SettingsError(f"{name}={environ[name]!r}: {exc}") from None
    return values


def parse(parser: argparse.ArgumentParser, section: str, argv: Sequence[str] | None = None,
          environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """Parse `argv` (default sys.argv[1:]) over the environment and the config file."""
    argv = sys.argv[1:] if argv is None else list(argv)
    environ = os.environ if environ is None else environ
    parser.error = lambda message: _fail(parser, message)  # type: ignore[method-assign]
    given = config_flag(argv)
    try:
        values = resolve(parser, section, given or environ.get(CONFIG_ENV) or None, environ)
    except SettingsError as exc:
        _fail(parser, str(exc))
    plain = {dest: value for dest, (action, value) in values.items() if not _is_list(action)}
    lists = {dest: value for dest, (action, value) in values.items() if _is_list(action)}
    parser.set_defaults(**plain)
    originals = {dest: parser.get_default(dest) for dest in lists}
    args = parser.parse_args(argv)
    if getattr(args, "config", None) != given:
        _fail(parser, "write --config in full")  # an abbreviation was not read above
    for dest, value in lists.items():
        # repeatable flags append to their default: apply these only when none was given
        if getattr(args, dest) == originals[dest]:
            setattr(args, dest, value)
    return args


def _fail(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    """Print one line `prog: error: message` to stderr and exit with code 2."""
    parser.exit(EXIT_USAGE, f"{parser.prog}: error: {message} (see --help)\n")
