"""taskgrid: a distributed task scheduler (the web2py scheduler as a gRPC service).

The code lives in subpackages mapped from the top-level folders: taskgrid.coordinator
(coordinator/), taskgrid.worker (worker/), taskgrid.client (client/) and the generated
stubs taskgrid.v1 (gen/python/). This package holds only the command-line dispatcher.
"""

__version__ = "0.1.0"
