"""Loading `--tasks`: module names and file paths, a `tasks` dict or public functions."""

from __future__ import annotations

import itertools
import sys
import textwrap

import pytest

from taskgrid.worker.registry import RegistryError, is_file_spec, load_tasks

_names = itertools.count()

PUBLIC_FUNCTIONS = """
    import os
    from json import dumps

    CONSTANT = 3

    def add(a, b):
        return a + b

    def greet(name="world"):
        return "hello " + name

    def _helper():
        return None

    class Thing:
        pass

    lam = lambda: 1
"""


@pytest.fixture
def write_module(tmp_path, monkeypatch):
    """Write a uniquely named module into tmp_path (the cwd); return its name."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    created = []

    def write(source: str, name: str | None = None) -> str:
        name = name or f"tg_test_tasks_{next(_names)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        created.append(name)
        return name

    yield write
    for name in created:
        sys.modules.pop(name, None)


def test_module_name_registers_public_functions_defined_there(write_module):
    name = write_module(PUBLIC_FUNCTIONS)
    tasks = load_tasks(name)
    assert sorted(tasks) == ["add", "greet"]  # not dumps (imported), _helper, Thing, lam
    assert tasks["add"](1, 2) == 3


def test_file_path_registers_public_functions(write_module, tmp_path):
    name = write_module(PUBLIC_FUNCTIONS)
    tasks = load_tasks(str(tmp_path / f"{name}.py"))
    assert sorted(tasks) == ["add", "greet"]


def test_relative_file_path(write_module):
    name = write_module(PUBLIC_FUNCTIONS)
    assert sorted(load_tasks(f"{name}.py")) == ["add", "greet"]


def test_tasks_dict_wins_over_functions(write_module):
    name = write_module("""
        def add(a, b):
            return a + b

        def other():
            return 1

        def _private_impl(x):
            return x * 2

        tasks = {"double": _private_impl, "sum": add}
    """)
    tasks = load_tasks(name)
    assert sorted(tasks) == ["double", "sum"]
    assert tasks["double"](4) == 8


def test_tasks_dict_entries_must_be_callables(write_module):
    name = write_module("tasks = {'x': 42}\n")
    with pytest.raises(RegistryError, match="callable"):
        load_tasks(name)


def test_module_without_functions_is_an_error(write_module):
    name = write_module("from os.path import join\nVALUE = 1\n")
    with pytest.raises(RegistryError, match="no task functions"):
        load_tasks(name)


def test_missing_module_is_an_error(write_module):
    with pytest.raises(RegistryError, match="cannot import"):
        load_tasks("tg_test_tasks_does_not_exist")


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(RegistryError, match="does not exist"):
        load_tasks(str(tmp_path / "nope.py"))


def test_module_that_raises_on_import_is_an_error_with_its_traceback(write_module, tmp_path):
    name = write_module("import tg_missing_dependency_xyz\n\ndef f():\n    pass\n")
    with pytest.raises(RegistryError, match="tg_missing_dependency_xyz"):
        load_tasks(name)
    with pytest.raises(RegistryError, match="ZeroDivisionError"):
        load_tasks(str(tmp_path / f"{write_module('x = 1 / 0')}.py"))


def test_file_named_like_a_stdlib_module_does_not_replace_it(write_module, tmp_path):
    import json

    write_module("def dumps_task():\n    return 1\n", name="json")
    tasks = load_tasks(str(tmp_path / "json.py"))
    assert list(tasks) == ["dumps_task"]
    assert sys.modules["json"] is json
    for key in [k for k in sys.modules if k.startswith("_taskgrid_tasks_")]:
        del sys.modules[key]


def test_file_can_import_its_siblings(write_module, tmp_path):
    helper = write_module("def shout(text):\n    return text.upper()\n")
    main = write_module(f"import {helper}\n\ndef loud(text):\n    return {helper}.shout(text)\n")
    tasks = load_tasks(str(tmp_path / f"{main}.py"))
    assert list(tasks) == ["loud"]
    assert tasks["loud"]("hi") == "HI"


@pytest.mark.parametrize(
    ("spec", "is_file"),
    [("tasks.py", True), ("dir/tasks", True), ("my.tasks", False), ("tasks", False)],
)
def test_is_file_spec(spec, is_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_file_spec(spec) is is_file
