"""The `taskgrid` command: routes to the coordinator, the worker or the client CLI.

It only dispatches, so that the client and worker packages never import the
coordinator (tests/unit/test_layering.py keeps that true).
"""

from __future__ import annotations

import importlib
import sys

#: subcommand -> module whose `main(argv)` runs it; the rest go to the client CLI.
_ROUTES = {
    "coordinator": "taskgrid.coordinator.main",
    "worker": "taskgrid.worker.main",
    "dashboard": "taskgrid.dashboard.main",
}


def main(argv: list[str] | None = None) -> int:
    """Run the `taskgrid` command line and return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    module = _ROUTES.get(args[0], "taskgrid.client.cli") if args else "taskgrid.client.cli"
    if module != "taskgrid.client.cli":
        args = args[1:]
    code: int = importlib.import_module(module).main(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
