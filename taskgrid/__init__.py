"""taskgrid: a distributed task scheduler (the web2py scheduler as a gRPC service).

The code lives in subpackages mapped from the top-level folders: taskgrid.coordinator
(coordinator/), taskgrid.worker (worker/), taskgrid.client (client/) and the generated
stubs taskgrid.v1 (gen/python/). This package holds the command-line dispatcher and what
the coordinator, the worker and the client share: logging (logs.py), settings
(settings.py) and optional tracing (tracing.py).
"""

__version__ = "0.1.0"
