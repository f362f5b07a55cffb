"""`python -m taskgrid`: the same as the `taskgrid` command."""

import sys

from taskgrid.cli import main

sys.exit(main())
