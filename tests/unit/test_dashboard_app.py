"""The dashboard's application without a browser: Starlette's TestClient against a real
coordinator (SQLite only). The pages in a real browser are tests/browser's."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytest.importorskip("starlette.testclient", reason="the dashboard's dependencies are missing")

from starlette.testclient import TestClient  # noqa: E402

from taskgrid.client import Scheduler  # noqa: E402
from taskgrid.dashboard.app import Settings, create_app, js_string, parse_queue_form  # noqa: E402
from taskgrid.dashboard.backend import Backend  # noqa: E402
from taskgrid.dashboard.main import split_listen  # noqa: E402
from taskgrid.loopback import is_loopback_host as is_loopback  # noqa: E402
from tests.support.processes import Access  # noqa: E402
from tests.support.wait import wait_until  # noqa: E402

TOKENS = {"client": "client-token-0123456789", "worker": "worker-token-0123456789",
          "admin": "admin-token-0123456789"}
NOBODY = "nobody"  # a group no worker serves
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: these tests are about the dashboard, not the store."""
    return f"sqlite:///{tmp_path / 'taskgrid.sqlite'}"


def app_client(address: str, *, token: str | None = "", require_login: bool = False
               ) -> TestClient:
    backend = Backend(address, token=token)
    app = create_app(Settings(backend=backend, require_login=require_login,
                              session_secret="test-secret"))
    return TestClient(app, base_url="http://127.0.0.1", follow_redirects=False)


def csrf_of(http: TestClient, path: str = "/queue") -> str:
    page = http.get(path)
    assert page.status_code == 200, page.text
    match = CSRF.search(page.text)
    assert match, page.text
    return match.group(1)


@pytest.fixture
def secured(start_coordinator, tmp_path):
    path = tmp_path / "tokens"
    path.write_text("".join(f"{role} {token}\n" for role, token in TOKENS.items()))
    coordinator = start_coordinator(extra_args=["--tokens-file", str(path)],
                                    access=Access(token=TOKENS["admin"]))
    admin = Scheduler(coordinator.address, token=TOKENS["admin"])
    yield coordinator, admin
    admin.close()


def test_the_dashboard_is_a_client_only():
    """It reaches the coordinator through taskgrid.client's public API, never the database."""
    for path in sorted((ROOT / "dashboard").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("taskgrid.coordinator", "taskgrid.v1", "sqlalchemy",
                                            "taskgrid.client._")), f"{path} imports {name}"


def test_listen_and_helpers():
    assert split_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert split_listen("[::1]:8080") == ("::1", 8080)
    with pytest.raises(ValueError):
        split_listen("localhost")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")
    assert "'" not in js_string("it's <b>") and "<" not in js_string("it's <b>")
    function, pargs, pvars, fields, errors = parse_queue_form(
        {"function": "add", "args": "[1, 2]", "vars": "", "group": "g", "timeout": "5",
         "enabled": "on", "start_time": "2030-01-02T03:04"})
    assert (function, pargs, pvars, errors) == ("add", [1, 2], None, {})
    assert fields["group_name"] == "g" and fields["timeout"] == 5 and fields["enabled"] is True
    assert fields["start_time"].isoformat() == "2030-01-02T03:04:00+00:00"
    *_, errors = parse_queue_form({"function": "", "args": "[", "timeout": "x"})
    assert set(errors) == {"function", "args", "timeout"}


def test_login_roles_and_csrf(secured):
    coordinator, admin = secured
    task_id = admin.queue_task("add", pargs=[1, 1], group_name=NOBODY).id
    with app_client(coordinator.address) as http:  # no token of its own: a page says so
        page = http.get("/")
        assert page.status_code == 403 and 'data-page="error"' in page.text
    with app_client(coordinator.address, token=TOKENS["admin"], require_login=True) as http:
        # every page leads to the login form
        page = http.get(f"/tasks/{task_id}")
        assert page.status_code == 303
        assert page.headers["location"].startswith("/login?next=")
        csrf = csrf_of(http, "/login")
        # a POST without the session's CSRF token is refused
        assert http.post("/login", data={"token": TOKENS["admin"]}).status_code == 403
        assert http.post("/login", data={"token": TOKENS["admin"],
                                         "csrf": "wrong"}).status_code == 403
        # an unknown token stays on the login form, and is not echoed back
        bad = http.post("/login", data={"token": "not-a-known-token", "csrf": csrf})
        assert bad.status_code == 401 and "unknown token" in bad.text
        assert "not-a-known-token" not in bad.text
        # a client token logs in: it sees, and may not act
        done = http.post("/login", data={"token": TOKENS["client"], "csrf": csrf,
                                         "next": f"/tasks/{task_id}"})
        assert done.status_code == 303 and done.headers["location"] == f"/tasks/{task_id}"
        cookie = done.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = http.get(f"/tasks/{task_id}")
        assert page.status_code == 200 and 'data-page="task"' in page.text
        assert 'data-action="stop"' not in page.text
        assert TOKENS["client"] not in page.text and TOKENS["admin"] not in page.text
        csrf = csrf_of(http, f"/tasks/{task_id}")  # the login made a new one
        assert http.post(f"/tasks/{task_id}/stop", data={"csrf": csrf}).status_code == 403
        assert http.post("/workers/action", data={"csrf": csrf, "action": "kill",
                                                  "group": NOBODY}).status_code == 403
        assert http.post("/queue", data={"csrf": csrf, "function": "add"}).status_code == 403
        assert str(admin.task_status(task_id).status) == "QUEUED"
        # log out, then in as admin: the stop goes through and says so
        assert http.post("/logout", data={"csrf": csrf}).status_code == 303
        assert http.get("/").status_code == 303
        csrf = csrf_of(http, "/login")
        assert http.post("/login", data={"token": TOKENS["admin"],
                                         "csrf": csrf}).status_code == 303
        page = http.get(f"/tasks/{task_id}")
        assert 'data-action="stop"' in page.text
        csrf = CSRF.search(page.text).group(1)
        assert http.post(f"/tasks/{task_id}/stop", data={}).status_code == 403
        done = http.post(f"/tasks/{task_id}/stop", data={"csrf": csrf})
        assert done.status_code == 303 and done.headers["location"] == f"/tasks/{task_id}"
        assert str(admin.task_status(task_id).status) == "STOPPED"
        page = http.get(f"/tasks/{task_id}")
        assert 'data-testid="flash"' in page.text and "stop sent" in page.text
        # an action the coordinator refuses is a flash message, not a 500
        done = http.post(f"/tasks/{task_id}/stop", data={"csrf": csrf})
        assert done.status_code == 303
        assert 'data-testid="flash"' in http.get(f"/tasks/{task_id}").text


def test_queue_form_and_pages(coordinator, start_worker):
    with app_client(coordinator.address) as http, Scheduler(coordinator.address) as client:
        csrf = csrf_of(http)
        assert http.post("/queue", data={"function": "add"}).status_code == 403
        page = http.post("/queue", data={"csrf": csrf, "function": "add", "args": "not json",
                                         "enabled": "on"})
        assert page.status_code == 400
        assert 'class="field-error" data-field="args"' in page.text
        assert 'value="not json"' in page.text  # the values are kept
        page = http.post("/queue", data={"csrf": csrf, "function": "add", "args": "[2, 3]",
                                         "timeout": "0", "enabled": "on"})
        assert page.status_code == 400
        assert 'data-field="timeout"' in page.text and 'data-field="args"' not in page.text
        assert client.list_tasks() == []
        done = http.post("/queue", data={"csrf": csrf, "function": "add", "args": "[2, 3]",
                                         "timeout": "60", "enabled": "on"})
        assert done.status_code == 303
        task_id = int(done.headers["location"].rsplit("/", 1)[1])
        start_worker("w1")
        wait_until(lambda: str(client.task_status(task_id).status) == "COMPLETED",
                   timeout=20, desc="the queued task to complete")

        # the live events of a finished task: its status, then the end
        with http.stream("GET", f"/tasks/{task_id}/events") as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            text = "".join(events.iter_text())
        assert "event: status" in text and '"COMPLETED"' in text
        assert text.rstrip().endswith("event: end\ndata: {}")

        page = http.get("/")
        assert page.status_code == 200
        assert re.search(r'data-testid="count-COMPLETED">1<', page.text)
        assert 'data-testid="live-workers">1<' in page.text
        page = http.get("/workers")
        assert 'tr data-worker="w1"' in page.text and 'form method="post"' in page.text
        assert http.get("/tasks/999999").status_code == 404
        assert http.get("/jobs/no-such-job").status_code == 404

        # 50 tasks a page, continued with ListTasks' page token
        client.queue_tasks([{"function": "add", "pargs": [n, n], "group_name": NOBODY}
                            for n in range(55)])
        first = http.get("/tasks?status=QUEUED")
        ids = [int(i) for i in re.findall(r'<tr data-task-id="(\d+)"', first.text)]
        assert len(ids) == 50 and ids == sorted(ids, reverse=True)
        link = re.search(r'data-testid="next-page" href="([^"]+)"', first.text)
        assert link, first.text
        second = http.get(link.group(1).replace("&amp;", "&"))
        more = [int(i) for i in re.findall(r'<tr data-task-id="(\d+)"', second.text)]
        assert len(more) == 5 and max(more) < min(ids)
        assert 'data-testid="next-page"' not in second.text
        assert http.get("/tasks?page=not-a-token").status_code == 400  # the coordinator's word
        oldest = http.get("/tasks?order=oldest&group=nobody")
        ids = [int(i) for i in re.findall(r'<tr data-task-id="(\d+)"', oldest.text)]
        assert ids == sorted(ids) and len(ids) == 50
        # a requeue the coordinator refuses (the task has not ended): a flash, not a 500
        done = http.post(f"/tasks/{ids[0]}/requeue", data={"csrf": csrf})
        assert done.status_code == 303
        page = http.get(f"/tasks/{ids[0]}")
        assert 'class="flash flash-error"' in page.text
