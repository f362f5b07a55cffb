"""The dashboard's Starlette application: pages, live task events, login and actions.

Every page reads through the dashboard's own client (its ``--token``); every action is a
POST carrying the session's CSRF token, sent with the logged-in user's token so the
coordinator judges it. Coordinator errors become an error page (reads) or a flash
message (actions), never a 500.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskgrid.client import (
    InvalidArgumentError,
    JobView,
    NotFoundError,
    OutputChunk,
    PermissionDeniedError,
    RunRecord,
    Scheduler,
    TaskgridError,
    TaskRecord,
    TaskStatus,
    UnauthenticatedError,
    UnavailableError,
    WorkerRecord,
)

from . import charts
from .backend import PAGE_SIZE, Backend, Role, TaskFilters, UnknownTokenError, list_page

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
STATUSES = [s.value for s in TaskStatus]
#: seconds between SSE comments that keep an idle event stream (and its proxies) open
KEEPALIVE_S = 10.0
#: event streams open at once (each holds a thread and a gRPC stream); more are refused (503)
MAX_STREAMS = 200
#: runs listed on a task page (the latest ones)
MAX_RUNS_SHOWN = 100
TASK_ACTIONS = ("stop", "requeue", "enable", "disable", "delete")
WORKER_ACTIONS = ("disable", "resume", "terminate", "kill")
#: task fields whose 0 means "not set" (web2py's rule, or no cap), shown as "unset"
_UNSET_WHEN_ZERO = frozenset({"retry_delay", "retry_delay_max"})
#: queue form fields that are whole numbers
QUEUE_INT_FIELDS = ("timeout", "repeats", "period", "retry_failed", "priority")
#: queue_task's field names -> the queue form's
QUEUE_ERROR_FIELDS = {"group_name": "group", "function_name": "function"}


@dataclass
class Settings:
    """What `create_app` needs."""

    backend: Backend
    require_login: bool
    session_secret: str
    https_cookie: bool = False


@dataclass(frozen=True)
class User:
    """Who is looking: their role, and the token their actions are sent with.

    ``token`` None is the dashboard's own token (no login on loopback).
    """

    role: Role
    token: str | None

    @property
    def admin(self) -> bool:
        """True when the session may act."""
        return self.role is Role.ADMIN


# --- formatting --------------------------------------------------------------------------


def fmt_time(value: datetime | None) -> str:
    """A UTC time as ``YYYY-MM-DD HH:MM:SSZ``, or "" for None."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def age_s(value: datetime | None) -> str:
    """Seconds since `value`, one decimal, or "" for None."""
    if value is None:
        return ""
    return f"{(datetime.now(UTC) - value).total_seconds():.1f} s"


def js_string(text: object) -> str:
    """`text` as the inside of a single-quoted JavaScript string, safe in an HTML attribute."""
    out = []
    for ch in str(text):
        if ch.isalnum() or ch in " _-.:,?!#/()":
            out.append(ch)
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else ch)
    return "".join(out)


def field_text(value: object) -> str:
    """A task field's value as text for the task page."""
    if isinstance(value, datetime):
        return fmt_time(value)
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return ""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json.dumps(dataclasses.asdict(value), sort_keys=True, default=str)
    return str(value)


def parse_utc(text: str) -> datetime:
    """A ``datetime-local`` value (read as UTC) as an aware datetime.

    Raises:
        ValueError: not a date and time.
    """
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters["time"] = fmt_time
templates.env.filters["age"] = age_s
templates.env.filters["js"] = js_string
templates.env.filters["quote"] = lambda text: quote(str(text), safe="")
templates.env.globals["STATUSES"] = STATUSES


# --- security headers --------------------------------------------------------------------

_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self' 'unsafe-inline'; "
     b"style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; "
     b"form-action 'self'; base-uri 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds a strict content security policy and friends to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the headers to its response."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- the application ----------------------------------------------------------------------

Handler = Callable[[Request, User], Awaitable[Response]]


class Dashboard:
    """The handlers, bound to one `Settings`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.backend = settings.backend
        #: one callback per open event stream that ends it (`end_streams`)
        self._streams: set[Callable[[], None]] = set()

    def end_streams(self) -> None:
        """End every open event stream now (shutdown: browsers are told not to reconnect).

        Safe to call from any thread, or from a signal handler.
        """
        for end in list(self._streams):
            end()

    # -- plumbing --

    def csrf(self, request: Request) -> str:
        """The session's CSRF token (made on first use)."""
        token = request.session.get("csrf")
        if not isinstance(token, str):
            token = request.session["csrf"] = secrets.token_urlsafe(32)
        return token

    def flash(self, request: Request, text: str, kind: str = "ok") -> None:
        """A message for the next page this session sees."""
        request.session["flash"] = {"text": text, "kind": kind}

    async def user(self, request: Request) -> User | None:
        """The session's user; None when a login is needed.

        Raises:
            TaskgridError: the coordinator could not say what the dashboard's token may do.
        """
        if not self.settings.require_login:
            role = await run_in_threadpool(self.backend.own_role)
            return User(role=role, token=None)
        token, name = request.session.get("token"), request.session.get("role")
        if isinstance(token, str) and name in (Role.ADMIN.value, Role.CLIENT.value):
            return User(role=Role(name), token=token)
        return None

    def render(self, request: Request, user: User | None, name: str, page: str,
               context: Mapping[str, Any], status_code: int = 200) -> Response:
        """A page from its template, with the common context."""
        flash = request.session.pop("flash", None)
        full = {
            "user": user, "page": page, "csrf": self.csrf(request), "flash": flash,
            "login_required": self.settings.require_login, **context,
        }
        response = templates.TemplateResponse(request, name, full, status_code=status_code)
        response.headers["cache-control"] = "no-store"
        return response

    def error_page(self, request: Request, user: User | None, exc: Exception) -> Response:
        """A coordinator error as a page (404 for NotFound, 503 when it is away, ...)."""
        status_code = 502
        if isinstance(exc, NotFoundError):
            status_code = 404
        elif isinstance(exc, UnavailableError):
            status_code = 503
        elif isinstance(exc, PermissionDeniedError | UnauthenticatedError):
            status_code = 403
        elif isinstance(exc, InvalidArgumentError):
            status_code = 400
        message = exc.message if isinstance(exc, TaskgridError) else str(exc)
        return self.render(request, user, "error.html", "error",
                           {"message": message, "code": getattr(exc, "code", None)},
                           status_code=status_code)

    def page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A GET page: logged in (or sent to /login), coordinator errors as pages."""

        async def endpoint(request: Request) -> Response:
            try:
                user = await self.user(request)
            except TaskgridError as exc:
                return self.error_page(request, None, exc)
            if user is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse("/login?" + urlencode({"next": target}), 303)
            try:
                return await handler(request, user)
            except TaskgridError as exc:
                return self.error_page(request, user, exc)

        return endpoint

    async def checked_post(self, request: Request) -> tuple[FormData, User] | Response:
        """The form of a POST with a good CSRF token by a logged-in admin; else a refusal."""
        form = await request.form()
        sent = form.get("csrf")
        good = request.session.get("csrf")
        if not (isinstance(sent, str) and isinstance(good, str)
                and secrets.compare_digest(sent, good)):
            return PlainTextResponse("missing or wrong CSRF token", 403)
        try:
            user = await self.user(request)
        except TaskgridError as exc:
            return self.error_page(request, None, exc)
        if user is None:
            return RedirectResponse("/login", 303)
        if not user.admin:
            return PlainTextResponse("this needs the admin role", 403)
        return form, user

    async def act(self, request: Request, user: User, call: Callable[[Scheduler], str],
                  back: str, failed_back: str | None = None) -> Response:
        """Run `call` with the user's client; flash what it says (or its error), go back."""
        try:
            client = await run_in_threadpool(self.backend.client, user.token)
            text = await run_in_threadpool(call, client)
            self.flash(request, text)
        except TaskgridError as exc:
            self.flash(request, exc.message, "error")
            back = failed_back or back
        except ValueError as exc:  # a token the client refuses to send
            self.flash(request, str(exc), "error")
            back = failed_back or back
        return RedirectResponse(back, 303)

    # -- login --

    async def login_form(self, request: Request) -> Response:
        """GET /login."""
        if not self.settings.require_login:
            return RedirectResponse("/", 303)
        return self.render(request, None, "login.html", "login",
                           {"next": safe_next(request.query_params.get("next")), "error": None})

    async def login(self, request: Request) -> Response:
        """POST /login: check the pasted token against the coordinator."""
        if not self.settings.require_login:
            return RedirectResponse("/", 303)
        form = await request.form()
        sent, good = form.get("csrf"), request.session.get("csrf")
        if not (isinstance(sent, str) and isinstance(good, str)
                and secrets.compare_digest(sent, good)):
            return PlainTextResponse("missing or wrong CSRF token", 403)
        token = str(form.get("token") or "").strip()
        target = safe_next(str(form.get("next") or "/"))
        error = None
        status_code = 401
        if not token:
            error = "paste a token"
        else:
            try:
                role = await run_in_threadpool(self.backend.check_token, token)
            except UnknownTokenError as exc:
                error = str(exc)
            except TaskgridError as exc:
                error, status_code = f"the coordinator could not check it: {exc.message}", 503
            else:
                request.session.clear()
                request.session.update({"token": token, "role": role.value,
                                        "csrf": secrets.token_urlsafe(32)})
                logger.info("dashboard login with role %s", role.value)
                return RedirectResponse(target, 303)
        return self.render(request, None, "login.html", "login",
                           {"next": target, "error": error}, status_code=status_code)

    async def logout(self, request: Request) -> Response:
        """POST /logout."""
        form = await request.form()
        sent, good = form.get("csrf"), request.session.get("csrf")
        if not (isinstance(sent, str) and isinstance(good, str)
                and secrets.compare_digest(sent, good)):
            return PlainTextResponse("missing or wrong CSRF token", 403)
        request.session.clear()
        return RedirectResponse("/login" if self.settings.require_login else "/", 303)

    # -- pages --

    async def overview(self, request: Request, user: User) -> Response:
        """GET /: totals, counts by group, the last hour, live workers, the oldest due task."""
        reader = self.backend.client()
        stats = await run_in_threadpool(reader.stats)
        totals = dict.fromkeys(STATUSES, 0)
        groups: dict[str, dict[str, int]] = {}
        for c in stats.counts:
            totals[c.status.value] = totals.get(c.status.value, 0) + c.count
            groups.setdefault(c.group_name, dict.fromkeys(STATUSES, 0))[c.status.value] += c.count
        try:
            live: int | None = len(await run_in_threadpool(reader.get_workers))
        except PermissionDeniedError:
            live = None
        bars, top = charts.throughput_bars(stats.last_hour)
        return self.render(request, user, "overview.html", "overview", {
            "totals": totals, "groups": sorted(groups.items()), "bars": bars, "top": top,
            "chart_w": charts.CHART_WIDTH, "chart_h": charts.CHART_HEIGHT,
            "live": live, "oldest": stats.oldest_due, "computed_at": stats.computed_at,
            "last_hour": stats.last_hour,
        })

    async def tasks(self, request: Request, user: User) -> Response:
        """GET /tasks: one page of the filtered task list."""
        q = request.query_params
        values = {k: q.get(k, "") for k in ("status", "group", "function", "name", "uuid",
                                            "created_after", "created_before", "order")}
        errors: dict[str, str] = {}
        status = values["status"] or None
        if status is not None and status not in STATUSES:
            errors["status"] = "not a task status"
            status = None
        times: dict[str, datetime | None] = {}
        for key in ("created_after", "created_before"):
            times[key] = None
            if values[key]:
                try:
                    times[key] = parse_utc(values[key])
                except ValueError:
                    errors[key] = "not a date and time"
        oldest = values["order"] == "oldest"
        token = q.get("page", "")
        filters = TaskFilters(status=status, group_name=values["group"] or None,
                              function_name=values["function"] or None,
                              task_name=values["name"] or None, uuid=values["uuid"] or None,
                              created_after=times["created_after"],
                              created_before=times["created_before"], oldest_first=oldest)
        reader = self.backend.client()
        rows, next_token = await run_in_threadpool(list_page, reader, filters, token)
        kept = [(k, v) for k, v in q.multi_items() if k != "page"]
        next_url = None
        if next_token:
            next_url = "/tasks?" + urlencode([*kept, ("page", next_token)])
        first_url = None
        if token:
            first_url = "/tasks" + ("?" + urlencode(kept) if kept else "")
        return self.render(request, user, "tasks.html", "tasks", {
            "values": values, "errors": errors, "rows": rows, "next_url": next_url,
            "first_url": first_url, "page_size": PAGE_SIZE,
        }, status_code=400 if errors else 200)

    async def task(self, request: Request, user: User) -> Response:
        """GET /tasks/{id}: fields, why it waits, prerequisites, its job, runs, live output."""
        task_id = int(request.path_params["task_id"])
        reader = self.backend.client()

        def load() -> dict[str, Any] | None:
            status = reader.task_status(task_id, output=True)
            if status is None:
                return None
            runs: list[RunRecord] = reader.runs(task_id)
            reason = reader.explain(task_id)
            job: JobView | None
            try:
                job = reader.get_job(task=task_id)
            except NotFoundError:
                job = None
            return {"status": status, "runs": runs, "reason": reason, "job": job}

        found = await run_in_threadpool(load)
        if found is None:
            return self.error_page(request, user, NotFoundError(f"no task {task_id}"))
        record: TaskRecord = found["status"].task
        job = found["job"]
        job_url = None
        if job is not None:
            job_url = (f"/jobs/{quote(job.job_name, safe='')}" if job.job_name
                       else f"/tasks/{task_id}/job")
        fields = [(f.name, "unset" if f.name in _UNSET_WHEN_ZERO and not getattr(
                   record, f.name) else field_text(getattr(record, f.name)))
                  for f in dataclasses.fields(TaskRecord)]
        runs = found["runs"]
        return self.render(request, user, "task.html", "task", {
            "task": record, "fields": fields, "reason": found["reason"],
            "waiting_for": found["status"].waiting_for, "job": job, "job_url": job_url,
            "runs": runs[-MAX_RUNS_SHOWN:], "older_runs": max(0, len(runs) - MAX_RUNS_SHOWN),
            "output": runs[-1].run_output if runs else "",
            "actions": task_actions(record),
        })

    async def task_events(self, request: Request) -> Response:
        """GET /tasks/{id}/events: the task's watch stream as server-sent events."""
        try:
            user = await self.user(request)
        except TaskgridError as exc:
            return PlainTextResponse(exc.message, 503)
        if user is None:
            return PlainTextResponse("log in first", 401)
        task_id = int(request.path_params["task_id"])
        if len(self._streams) >= MAX_STREAMS:
            return PlainTextResponse("too many live views open; reload later", 503)
        watcher = await run_in_threadpool(self.backend.new_client, None)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        done = threading.Event()

        def put(item: tuple[str, Any]) -> None:
            if not done.is_set():
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, item)
                except RuntimeError:  # the loop has closed
                    pass

        def pump() -> None:
            try:
                for event in watcher.watch(task_id):
                    put(("event", event))
            except Exception as exc:  # ended by close() on disconnect, or the coordinator
                put(("error", exc))
            finally:
                put(("end", None))

        threading.Thread(target=pump, name=f"dashboard-watch-{task_id}", daemon=True).start()

        def end() -> None:
            put(("end", None))

        async def stream() -> AsyncIterator[str]:
            self._streams.add(end)
            try:
                yield "retry: 3000\n\n"
                while True:
                    try:
                        kind, item = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                    except TimeoutError:
                        yield ": keepalive\n\n"
                        continue
                    if kind == "event":
                        yield sse_event(item)
                    elif kind == "error":
                        message = item.message if isinstance(item, TaskgridError) else str(item)
                        yield f"event: failed\ndata: {json.dumps({'message': message})}\n\n"
                    else:
                        yield "event: end\ndata: {}\n\n"
                        return
            finally:
                self._streams.discard(end)
                done.set()
                watcher.close()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store",
                                          "x-accel-buffering": "no"})

    async def workers(self, request: Request, user: User) -> Response:
        """GET /workers (``?dead=1`` includes dead workers)."""
        dead = request.query_params.get("dead") in ("1", "on", "true", "yes")
        reader = self.backend.client()
        try:
            found: dict[str, WorkerRecord] = await run_in_threadpool(reader.get_workers, dead)
            refused = None
        except PermissionDeniedError as exc:
            found, refused = {}, exc.message
        rows = [found[name] for name in sorted(found)]
        groups = sorted({g for w in rows if w.alive for g in w.group_names})
        return self.render(request, user, "workers.html", "workers", {
            "workers": rows, "groups": groups, "dead": dead, "refused": refused,
            "actions": WORKER_ACTIONS,
        })

    async def job(self, request: Request, user: User) -> Response:
        """GET /jobs/{name} (or /tasks/{id}/job for a job without a name): its graph."""
        reader = self.backend.client()
        if "task_id" in request.path_params:
            task_id = int(request.path_params["task_id"])
            view = await run_in_threadpool(lambda: reader.get_job(task=task_id))
        else:
            name = request.path_params["job_name"]
            view = await run_in_threadpool(reader.get_job, name)
        graph = charts.job_graph(view)
        return self.render(request, user, "job.html", "job", {"job": view, "graph": graph,
                                                              "node_w": charts.NODE_W,
                                                              "node_h": charts.NODE_H})

    async def queue_form(self, request: Request, user: User) -> Response:
        """GET /queue."""
        return self.render(request, user, "queue.html", "queue",
                           {"values": {"enabled": "on"}, "errors": {}})

    # -- actions --

    async def queue(self, request: Request) -> Response:
        """POST /queue: queue_task with the form's fields."""
        checked = await self.checked_post(request)
        if isinstance(checked, Response):
            return checked
        form, user = checked
        values = {k: str(v) for k, v in form.items() if isinstance(v, str) and k != "csrf"}
        function, pargs, pvars, fields, errors = parse_queue_form(values)
        if not errors:
            try:
                client = await run_in_threadpool(self.backend.client, user.token)
                result = await run_in_threadpool(
                    lambda: client.queue_task(function, pargs, pvars, **fields))
            except TaskgridError as exc:
                self.flash(request, exc.message, "error")
                return self.render(request, user, "queue.html", "queue",
                                   {"values": values, "errors": {}}, status_code=400)
            if not result.errors and result.id is not None:
                self.flash(request, f"queued task {result.id}")
                return RedirectResponse(f"/tasks/{result.id}", 303)
            errors = {QUEUE_ERROR_FIELDS.get(k, k): v for k, v in result.errors.items()}
        return self.render(request, user, "queue.html", "queue",
                           {"values": values, "errors": errors}, status_code=400)

    async def task_action(self, request: Request) -> Response:
        """POST /tasks/{id}/{action}: stop, requeue, enable, disable or delete."""
        checked = await self.checked_post(request)
        if isinstance(checked, Response):
            return checked
        _, user = checked
        task_id = int(request.path_params["task_id"])
        action = request.path_params["action"]
        back = f"/tasks/{task_id}"
        if action not in TASK_ACTIONS:
            return PlainTextResponse("no such action", 404)

        def call(client: Scheduler) -> str:
            if action == "stop":
                return (f"stop sent to task {task_id}" if client.stop_task(task_id)
                        else f"task {task_id} had already ended")
            if action == "requeue":
                return f"requeued {client.requeue(task_id).count} task(s)"
            if action == "enable":
                return f"enabled {client.enable_tasks(task_id).count} task(s)"
            if action == "disable":
                return f"disabled {client.disable_tasks(task_id).count} task(s)"
            return f"deleted {client.delete_tasks(task_id).count} task(s)"

        return await self.act(request, user, call,
                              "/tasks" if action == "delete" else back, failed_back=back)

    async def worker_action(self, request: Request) -> Response:
        """POST /workers/action: disable, resume, terminate or kill a worker or a group."""
        checked = await self.checked_post(request)
        if isinstance(checked, Response):
            return checked
        form, user = checked
        action = str(form.get("action") or "")
        worker = str(form.get("worker") or "")
        group = str(form.get("group") or "")
        back = "/workers" + ("?dead=1" if form.get("dead") else "")
        if action not in WORKER_ACTIONS or bool(worker) == bool(group):
            self.flash(request, "name one worker or one group, and an action", "error")
            return RedirectResponse(back, 303)

        def call(client: Scheduler) -> str:
            method = getattr(client, action)
            changed: list[str] = (method(worker_name=worker) if worker
                                  else method(group_names=[group]))
            what = f"worker {worker}" if worker else f"group {group}"
            if not changed:
                return f"{action}: no worker of {what} changed"
            return f"{action} sent to {', '.join(changed)}"

        return await self.act(request, user, call, back)


def safe_next(target: str | None) -> str:
    """A local path to go to after login (anything else is /)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def task_actions(task: TaskRecord) -> list[str]:
    """The actions that apply to a task in its status."""
    if task.status.is_terminal:
        return ["requeue", "delete"]
    actions = ["stop"]
    if task.status is TaskStatus.QUEUED:
        actions.append("disable" if task.enabled else "enable")
    return actions


def sse_event(event: TaskRecord | OutputChunk) -> str:
    """One watch event as a server-sent event: ``output`` chunks and ``status`` snapshots."""
    if isinstance(event, OutputChunk):
        data = {"data": event.data, "clear": event.clear, "run_id": event.run_id,
                "seq": event.seq, "attempt": event.attempt}
        name = "output"
    else:
        data = {"status": event.status.value, "enabled": event.enabled,
                "times_run": event.times_run, "times_failed": event.times_failed,
                "worker": event.assigned_worker_name, "next_run_time": fmt_time(
                    event.next_run_time)}
        name = "status"
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def parse_queue_form(
    values: Mapping[str, str],
) -> tuple[str, Any, Any, dict[str, Any], dict[str, str]]:
    """The queue form as (function, pargs, pvars, fields, errors); errors by form field."""
    errors: dict[str, str] = {}
    function = values.get("function", "").strip()
    if not function:
        errors["function"] = "required"
    decoded: dict[str, Any] = {}
    for key in ("args", "vars"):
        text = values.get(key, "").strip()
        decoded[key] = None
        if text:
            try:
                decoded[key] = json.loads(text)
            except ValueError as exc:
                errors[key] = f"not JSON: {exc}"
    fields: dict[str, Any] = {}
    if values.get("group", "").strip():
        fields["group_name"] = values["group"].strip()
    for key in QUEUE_INT_FIELDS:
        text = values.get(key, "").strip()
        if text:
            try:
                fields[key] = int(text)
            except ValueError:
                errors[key] = "must be a whole number"
    if values.get("start_time", "").strip():
        try:
            fields["start_time"] = parse_utc(values["start_time"])
        except ValueError:
            errors["start_time"] = "not a date and time"
    fields["enabled"] = values.get("enabled") in ("on", "1", "true", "yes")
    return function, decoded["args"], decoded["vars"], fields, errors


def create_app(settings: Settings) -> Starlette:
    """The dashboard as an ASGI application."""
    d = Dashboard(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(settings.backend.close)

    routes = [
        Route("/", d.page(d.overview), name="overview"),
        Route("/login", d.login_form, methods=["GET"]),
        Route("/login", d.login, methods=["POST"]),
        Route("/logout", d.logout, methods=["POST"]),
        Route("/tasks", d.page(d.tasks), name="tasks"),
        Route("/tasks/{task_id:int}", d.page(d.task), name="task"),
        Route("/tasks/{task_id:int}/events", d.task_events),
        Route("/tasks/{task_id:int}/job", d.page(d.job)),
        Route("/tasks/{task_id:int}/{action}", d.task_action, methods=["POST"]),
        Route("/workers", d.page(d.workers), name="workers"),
        Route("/workers/action", d.worker_action, methods=["POST"]),
        Route("/jobs/{job_name:path}", d.page(d.job), name="job"),
        Route("/queue", d.page(d.queue_form), methods=["GET"]),
        Route("/queue", d.queue, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(SessionMiddleware, secret_key=settings.session_secret,
                   session_cookie="taskgrid_dashboard", same_site="strict",
                   https_only=settings.https_cookie, max_age=12 * 3600),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.end_streams = d.end_streams
    return app
