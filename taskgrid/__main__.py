from taskgrid.cli import main
import sys

sys.exit(main())
