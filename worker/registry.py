"""Loading the task functions a worker offers (`--tasks MODULE_OR_FILE`).

The worker process loads the registry once to learn the function names it
declares at Register; each task child loads it again (same spec, same
sys.path) to get the callables it runs. Loading imports user code, so this
module must not be imported for anything else and must never cache across
specs.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import traceback
import zlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

TaskFunction = Callable[..., Any]


class RegistryError(Exception):
    """The `--tasks` spec cannot be loaded or offers no task functions."""


def is_file_spec(spec: str) -> bool:
    """True when `spec` names a Python file rather than an importable module."""
    return spec.endswith(".py") or os.sep in spec or os.path.isfile(spec)


def load_module(spec: str) -> ModuleType:
    """Import the module named by `spec`: a dotted module name or a .py file path.

    A module name is looked up with the current directory on sys.path (as
    ``python -m`` would), so ``--tasks mytasks`` finds ``./mytasks.py``. A
    file is imported under its stem (or a unique name if the stem is taken)
    with its directory put on sys.path, so the file can import its siblings.

    Raises:
        RegistryError: the module or file cannot be found, or raised while
            being imported (the message carries its traceback).
    """
    if is_file_spec(spec):
        return _load_file(spec)
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(spec)
    except ImportError as exc:
        if exc.name == spec:
            raise RegistryError(f"cannot import tasks module {spec!r}: {exc}") from exc
        raise RegistryError(_import_failure(spec)) from exc
    except Exception as exc:
        raise RegistryError(_import_failure(spec)) from exc


def _import_failure(spec: str) -> str:
    """Message for user code that raised while being imported: its traceback."""
    return f"importing tasks {spec!r} failed:\n{traceback.format_exc().rstrip()}"


def _load_file(spec: str) -> ModuleType:
    path = os.path.abspath(spec)
    if not os.path.isfile(path):
        raise RegistryError(f"tasks file {spec!r} does not exist")
    directory = os.path.dirname(path)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    name = os.path.splitext(os.path.basename(path))[0]
    existing = sys.modules.get(name)
    if existing is not None:
        if os.path.abspath(getattr(existing, "__file__", "") or "") == path:
            return existing
        name = f"_taskgrid_tasks_{zlib.crc32(path.encode()):08x}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise RegistryError(f"cannot load tasks file {spec!r}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise RegistryError(_import_failure(spec)) from exc
    return module


def tasks_of(module: ModuleType) -> dict[str, TaskFunction]:
    """Return the task functions a module offers, by name.

    A module-level ``tasks`` mapping wins (web2py's ``Scheduler(db, tasks)``);
    otherwise every public function defined in the module itself with
    ``def`` under its own name: names starting with ``_``, functions
    imported from elsewhere, aliases and lambdas are left out.

    Raises:
        RegistryError: a ``tasks`` entry is not a str name mapped to a callable.
    """
    declared = getattr(module, "tasks", None)
    if isinstance(declared, Mapping):
        found: dict[str, TaskFunction] = {}
        for name, function in declared.items():
            if not isinstance(name, str) or not callable(function):
                raise RegistryError(
                    f"{module.__name__}.tasks[{name!r}] must map a str name to a callable"
                )
            found[name] = function
        return found
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_")
        and inspect.isfunction(value)
        and value.__module__ == module.__name__
        and value.__name__ == name
    }


def load_tasks(spec: str) -> dict[str, TaskFunction]:
    """Load `spec` and return its task functions by name.

    Raises:
        RegistryError: nothing loadable, or no task function found.
    """
    module = load_module(spec)
    found = tasks_of(module)
    if not found:
        raise RegistryError(
            f"{spec!r} offers no task functions (define public functions or a `tasks` dict)"
        )
    return found
