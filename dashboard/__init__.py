"""taskgrid.dashboard: a web dashboard for a coordinator (``taskgrid dashboard``).

Server-rendered pages (Starlette + Jinja2, a little vanilla JS) served by uvicorn. It is a
client of the coordinator's gRPC API only, through `taskgrid.client.Scheduler`: it reads with
its own token and acts with the logged-in user's token, so the coordinator enforces roles.
docs/dashboard.md describes the pages, the actions, login and security.
"""

from __future__ import annotations
