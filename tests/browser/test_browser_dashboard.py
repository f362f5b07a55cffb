"""The dashboard's pages and actions in headless Chromium (issue 13 point 4).

Real coordinator (SQLite), real workers running tests/support/sample_tasks.py, the dashboard
as its own process; every page a test visits is saved as a full-page screenshot under
test-artifacts/screenshots/ (see conftest.py). Waits are on conditions only.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from taskgrid.client import JobGraph, Scheduler, TaskStatus
from tests.browser.pages import (
    SCREENSHOTS,
    by_testid,
    click_confirmed,
    csrf_token,
    form_of,
    goto,
    reload_until,
    row_ids,
    submit,
    task_rows,
)
from tests.support.processes import Access
from tests.support.wait import wait_until

TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT", "STOPPED", "EXPIRED"}
NAV = ("nav-overview", "nav-tasks", "nav-workers", "nav-queue")
TOKENS = {"client": "client-token-0123456789", "worker": "worker-token-0123456789",
          "admin": "admin-token-0123456789"}
#: a group no worker serves: its tasks stay QUEUED
NOBODY = "nobody"
#: the buttons that act: on a task, on workers, queueing (only they carry a data-action)
ACTIONS = ("stop", "requeue", "enable", "disable", "delete", "resume", "terminate", "kill",
           "queue")
ACTION_BUTTONS = ", ".join(f'button[data-action="{action}"]' for action in ACTIONS)


def status_of(client, task_id) -> str:
    record = client.task_status(task_id)
    return "" if record is None else str(record.status)


def wait_status(client, task_id, wanted, timeout=20.0) -> None:
    wanted = {wanted} if isinstance(wanted, str) else set(wanted)
    wait_until(lambda: status_of(client, task_id) in wanted, timeout=timeout,
               desc=f"task {task_id} in {sorted(wanted)}")


def check_nav(page) -> None:
    for name in NAV:
        expect(by_testid(page, name)).to_have_count(1)


@pytest.fixture
def secured(start_coordinator, start_worker, tmp_path):
    """(coordinator with client, worker and admin tokens, its worker w1, an admin client)."""
    path = tmp_path / "tokens"
    path.write_text("# role token\n" + "".join(f"{r} {t}\n" for r, t in TOKENS.items()))
    coordinator = start_coordinator(extra_args=["--tokens-file", str(path)],
                                    access=Access(token=TOKENS["admin"]))
    worker = start_worker("w1", extra_args=["--token", TOKENS["worker"]])
    admin = Scheduler(coordinator.address, token=TOKENS["admin"])
    try:
        yield coordinator, worker, admin
    finally:
        admin.close()


def act(page, button, action) -> None:
    """Click an action's button, accept its confirm(), and wait for the flash message that
    names the action (on the page the POST lands on)."""
    click_confirmed(page, button)
    expect(by_testid(page, "flash")).to_contain_text(re.compile(action, re.IGNORECASE))


def fill_queue_form(page, **values) -> None:
    """Fill the queue form's named inputs and submit it."""
    form = page.locator('form[data-testid="queue-form"]')
    for name, value in values.items():
        form.locator(f'[name="{name}"]').fill(value)
    submit(form)


def login(page, url, token, *, ok=True) -> None:
    goto(page, f"{url}/login", "login")
    page.fill('input[name="token"]', token)
    submit(page.locator('form:has(input[name="token"])'))
    main = page.locator("main")
    if ok:
        expect(main).not_to_have_attribute("data-page", "login")
    else:
        expect(main).to_have_attribute("data-page", "login")


# -- 1. every page renders with real data ----------------------------------------------------------


def test_pages_render_real_data(client, start_worker, dashboard, page, shot):
    added = [client.queue_task("add", pargs=[i, 10]).id for i in (1, 2, 3)]
    failed = client.queue_task("fail", pargs=["failing on purpose"]).id
    waiting = client.queue_task("add", pargs=[0, 0], group_name=NOBODY).id
    job = JobGraph(client, "outfit")
    wear = {name: job.queue_task("echo", pargs=[name], task_name=name, group_name=NOBODY)
            for name in ("socks", "shoes", "watch")}
    job.add_deps(wear["shoes"], wear["socks"])  # the shoes go on after the socks
    # a job knows its tasks by their edges (GetJob reads deps.job_name): each has one
    job.add_deps(wear["watch"], wear["shoes"])
    job.validate()
    assert job.errors == {}
    job_ids = {name: handle.id for name, handle in wear.items()}
    everything = {*added, failed, waiting, *job_ids.values()}
    start_worker("w1")
    for task_id in (*added, failed):
        wait_status(client, task_id, TERMINAL)
    assert status_of(client, failed) == "FAILED"

    # overview: the counts are the tasks queued and run
    goto(page, f"{dashboard}/", "overview")
    check_nav(page)
    reload_until(page, by_testid(page, "count-COMPLETED"), "3")
    counts = {"QUEUED": 4, "COMPLETED": 3, "FAILED": 1}
    for status in TaskStatus:  # one number for each status
        expect(by_testid(page, f"count-{status.value}")).to_have_text(
            str(counts.get(status.value, 0)))
    expect(by_testid(page, "counts-table")).to_be_visible()
    expect(page.locator('svg[data-testid="throughput-chart"]')).to_be_visible()
    expect(by_testid(page, "live-workers")).to_have_text("1")
    expect(by_testid(page, "oldest-due")).to_be_visible()
    shot(page, "overview")

    # the task list shows them all; filtering by status narrows it
    by_testid(page, "nav-tasks").click()
    expect(page.locator("main")).to_have_attribute("data-page", "tasks")
    check_nav(page)
    expect(task_rows(page)).to_have_count(len(everything))
    assert set(row_ids(page)) == everything
    expect(page.locator(f'tr[data-task-id="{failed}"] td[data-col="status"]')).to_have_text(
        "FAILED")
    expect(page.locator(f'tr[data-task-id="{added[0]}"] td[data-col="status"]')).to_have_text(
        "COMPLETED")
    shot(page, "tasks")
    filters = page.locator('form[data-testid="task-filters"]')
    filters.locator('select[name="status"]').select_option("FAILED")
    submit(filters)
    expect(task_rows(page)).to_have_count(1)
    assert row_ids(page) == [failed]
    shot(page, "tasks-failed")
    filters = page.locator('form[data-testid="task-filters"]')
    filters.locator('select[name="status"]').select_option("COMPLETED")
    filters.locator('[name="function"]').fill("add")
    submit(filters)
    expect(task_rows(page)).to_have_count(3)
    assert set(row_ids(page)) == set(added)
    shot(page, "tasks-completed-add")

    # a task page: fields, and its run with the result
    goto(page, f"{dashboard}/tasks/{added[0]}", "task")
    check_nav(page)
    expect(by_testid(page, "task-status")).to_have_text("COMPLETED")
    fields = page.locator('dl[data-testid="task-fields"]')
    expect(fields).to_contain_text("add")
    expect(fields).to_contain_text(str(client.task_status(added[0]).uuid))
    [run] = client.runs(added[0])
    expect(page.locator("tr[data-run-id]")).to_have_count(1)
    expect(page.locator(f'tr[data-run-id="{run.id}"]')).to_contain_text("11")  # add(1, 10)
    shot(page, "task")
    goto(page, f"{dashboard}/tasks/{failed}", "task")
    expect(by_testid(page, "task-status")).to_have_text("FAILED")
    expect(page.locator("main")).to_contain_text("failing on purpose")  # the traceback
    shot(page, "task-failed")

    # a job's task: what it waits for, its job's graph
    goto(page, f"{dashboard}/tasks/{job_ids['shoes']}", "task")
    expect(by_testid(page, "task-status")).to_have_text("QUEUED")
    expect(by_testid(page, "waiting-for")).to_contain_text(str(job_ids["socks"]))
    expect(by_testid(page, "waiting-reason")).not_to_be_empty()
    shot(page, "task-waiting")
    by_testid(page, "job-link").click()
    expect(page.locator("main")).to_have_attribute("data-page", "job")
    assert page.url.rstrip("/").endswith("/jobs/outfit"), page.url
    check_nav(page)
    graph = page.locator('svg[data-testid="job-graph"]')
    expect(graph).to_be_visible()
    expect(graph.locator("g[data-task-id]")).to_have_count(3)
    for task_id in job_ids.values():
        expect(graph.locator(f'g[data-task-id="{task_id}"]')).to_have_count(1)
    shot(page, "job")

    # the workers page lists the worker
    by_testid(page, "nav-workers").click()
    expect(page.locator("main")).to_have_attribute("data-page", "workers")
    check_nav(page)
    expect(page.locator('tr[data-worker="w1"] td[data-col="status"]')).to_have_text("ACTIVE")
    shot(page, "workers")

    # 50 tasks a page, and a link to the next while more exist
    more = client.queue_tasks([{"function": "add", "pargs": [n, n], "group_name": NOBODY}
                               for n in range(50)])
    assert all(r.id for r in more), [r.errors for r in more if not r.id]
    everything |= {r.id for r in more}
    goto(page, f"{dashboard}/tasks", "tasks")
    expect(task_rows(page)).to_have_count(50)
    first = row_ids(page)
    by_testid(page, "next-page").click()
    expect(task_rows(page)).to_have_count(len(everything) - 50)
    second = row_ids(page)
    assert not set(first) & set(second) and set(first) | set(second) == everything
    expect(by_testid(page, "next-page")).to_have_count(0)
    shot(page, "tasks-page-2")


# -- 2. live output and progress -------------------------------------------------------------------


def test_live_output_and_progress(client, start_worker, dashboard, page, shot, state_dir):
    start_worker("w1")
    # The tasks wait on gate files this test writes: the page is open while they run,
    # however slow the machine, and they end only when the test has seen what it needs.
    task_id = client.queue_task("print_gated", pargs=["lines"]).id
    wait_status(client, task_id, "RUNNING")
    goto(page, f"{dashboard}/tasks/{task_id}", "task")
    output = page.locator('pre[data-testid="output"]')
    expect(output).to_contain_text("line 0")
    # the output came while the task runs: it cannot end before the gate opens
    assert status_of(client, task_id) == "RUNNING"
    expect(output).not_to_contain_text("line 1")
    expect(by_testid(page, "task-status")).to_have_text("RUNNING")
    shot(page, "task-running")
    (state_dir / "lines").write_text("open")
    expect(output).to_contain_text("line 1", timeout=20_000)  # the stream goes on to the end
    wait_status(client, task_id, "COMPLETED")
    reload_until(page, by_testid(page, "task-status"), "COMPLETED")
    shot(page, "task-completed")

    # progress: the line after a !clear! ("50%", then "!clear!100%"), seen by a page open
    # before the clear (the output stored after it has no marker left: a page opened later
    # shows "100%" as output only)
    task_id = client.queue_task("progress_gated", pargs=["progress"]).id
    wait_status(client, task_id, "RUNNING")
    goto(page, f"{dashboard}/tasks/{task_id}", "task")
    output = page.locator('pre[data-testid="output"]')
    expect(output).to_contain_text("50%")
    shot(page, "progress-running")
    (state_dir / "progress").write_text("open")
    # the page follows the stream: the cleared output's last line is the progress line
    expect(by_testid(page, "progress")).to_have_text("100%", timeout=20_000)
    expect(output).not_to_contain_text("50%")
    expect(by_testid(page, "task-status")).to_have_text("COMPLETED", timeout=20_000)
    shot(page, "progress")


# -- 3. stop and kill, end to end ------------------------------------------------------------------


def test_stop_button_stops_a_running_task(client, start_worker, dashboard, page, shot):
    start_worker("w1")
    task_id = client.queue_task("sleep_for", pargs=[60]).id
    wait_status(client, task_id, "RUNNING")
    goto(page, f"{dashboard}/tasks/{task_id}", "task")
    expect(by_testid(page, "task-status")).to_have_text("RUNNING")
    shot(page, "task-running")
    act(page, page.locator('button[data-action="stop"]'), "stop")
    shot(page, "task-stop-flash")
    wait_status(client, task_id, "STOPPED", timeout=20.0)
    # the open page follows the task's status; a fresh one shows the ended run
    expect(by_testid(page, "task-status")).to_have_text("STOPPED")
    page.reload()
    expect(by_testid(page, "task-status")).to_have_text("STOPPED")
    expect(page.locator('tr[data-run-id] td[data-col="status"]')).to_have_text("STOPPED")
    expect(page.locator('button[data-action="stop"]')).to_have_count(0)
    expect(page.locator('button[data-action="requeue"]')).to_have_count(1)
    shot(page, "task-stopped")


def test_worker_buttons_disable_resume_kill_terminate(client, start_worker, dashboard, page, shot):
    worker = start_worker("wk", groups=["g1"])
    # dead workers listed too: a killed worker stays on the page, in status KILL, once it exits
    goto(page, f"{dashboard}/workers?dead=1", "workers")
    status = page.locator('tr[data-worker="wk"] td[data-col="status"]')
    expect(status).to_have_text("ACTIVE")
    shot(page, "workers")

    act(page, page.locator('form[data-group="g1"] button[data-action="disable"]'), "disable")
    reload_until(page, status, "DISABLED")
    assert str(client.get_workers()["wk"].status) == "DISABLED"
    shot(page, "workers-disabled")

    act(page, page.locator('form[data-worker="wk"] button[data-action="resume"]'), "resume")
    reload_until(page, status, "ACTIVE")
    shot(page, "workers-resumed")

    act(page, page.locator('form[data-worker="wk"] button[data-action="kill"]'), "kill")
    expect(status).to_have_text("KILL")
    shot(page, "workers-kill")
    worker.wait(timeout=15.0)  # the worker process exits
    page.reload()
    expect(status).to_have_text("KILL")

    # terminate: the worker finishes and exits
    other = start_worker("wt")
    page.reload()
    act(page, page.locator('form[data-worker="wt"] button[data-action="terminate"]'),
        "terminate")
    expect(page.locator('tr[data-worker="wt"] td[data-col="status"]')).to_have_text("TERMINATE")
    other.wait(timeout=15.0)
    shot(page, "workers-terminate")


def test_task_buttons_disable_enable_stop_requeue_delete(client, dashboard, page, shot):
    task_id = client.queue_task("add", pargs=[1, 2], group_name=NOBODY).id  # stays QUEUED
    goto(page, f"{dashboard}/tasks/{task_id}", "task")
    status = by_testid(page, "task-status")
    enabled = page.locator('dl[data-testid="task-fields"] [data-field="enabled"]')
    expect(status).to_have_text("QUEUED")
    expect(enabled).to_have_text("True")
    shot(page, "task-queued")

    act(page, page.locator('button[data-action="disable"]'), "disable")
    expect(enabled).to_have_text("False")
    expect(page.locator('button[data-action="enable"]')).to_have_count(1)
    assert client.task_status(task_id).enabled is False
    shot(page, "task-disabled")
    act(page, page.locator('button[data-action="enable"]'), "enable")
    expect(enabled).to_have_text("True")

    act(page, page.locator('button[data-action="stop"]'), "stop")
    reload_until(page, status, "STOPPED")
    assert status_of(client, task_id) == "STOPPED"
    shot(page, "task-stopped")
    act(page, page.locator('button[data-action="requeue"]'), "requeue")
    reload_until(page, status, "QUEUED")
    assert status_of(client, task_id) == "QUEUED"

    act(page, page.locator('button[data-action="stop"]'), "stop")
    reload_until(page, status, "STOPPED")
    act(page, page.locator('button[data-action="delete"]'), "delete")
    expect(page.locator("main")).to_have_attribute("data-page", "tasks")
    expect(page.locator(f'tr[data-task-id="{task_id}"]')).to_have_count(0)
    assert client.task_status(task_id) is None
    shot(page, "tasks-after-delete")


def test_task_list_filters(client, dashboard, page, shot):
    a = client.queue_task("add", pargs=[1, 1], group_name="ga", task_name="alpha").id
    b = client.queue_task("echo", pargs=["b"], group_name="gb", task_name="beta").id
    c = client.queue_task("add", pargs=[2, 2], group_name="gb", task_name="gamma").id
    uuid_b = client.task_status(b).uuid

    def filtered(**values) -> list[int]:
        goto(page, f"{dashboard}/tasks", "tasks")
        form = page.locator('form[data-testid="task-filters"]')
        for name, value in values.items():
            field = form.locator(f'[name="{name}"]')
            if name in ("status", "order"):
                field.select_option(value)
            else:
                field.fill(value)
        submit(form)
        expect(page.locator("main")).to_have_attribute("data-page", "tasks")
        page.wait_for_url(re.compile(r"/tasks\?"))
        return row_ids(page)

    assert filtered() == [c, b, a]  # newest first
    shot(page, "tasks")
    assert filtered(order="oldest") == [a, b, c]
    assert filtered(group="gb") == [c, b]
    assert filtered(function="add") == [c, a]
    assert filtered(name="beta") == [b]
    assert filtered(uuid=uuid_b) == [b]
    shot(page, "tasks-by-uuid")
    assert filtered(group="gb", function="add") == [c]
    assert filtered(created_before="2000-01-01T00:00:00") == []
    expect(page.locator("tr[data-task-id]")).to_have_count(0)
    assert filtered(created_after="2000-01-01T00:00:00", order="oldest") == [a, b, c]
    shot(page, "tasks-created-after")


# -- 4. the queue form -----------------------------------------------------------------------------


def test_queue_form_validation_and_submit(client, start_worker, dashboard, page, shot):
    start_worker("w1")
    goto(page, f"{dashboard}/", "overview")
    shot(page, "overview")
    by_testid(page, "nav-queue").click()
    expect(page.locator("main")).to_have_attribute("data-page", "queue")
    # args that are not JSON: the dashboard's own check
    fill_queue_form(page, function="add", args="not json", timeout="60")
    expect(page.locator('.field-error[data-field="args"]')).to_contain_text("JSON")
    expect(page.locator("main")).to_have_attribute("data-page", "queue")
    shot(page, "queue-error-args")
    # a timeout of 0: the coordinator's validation, shown next to the field
    fill_queue_form(page, function="add", args="[2, 3]", timeout="0")
    expect(page.locator('.field-error[data-field="timeout"]')).to_be_visible()
    expect(page.locator('.field-error[data-field="args"]')).to_have_count(0)
    expect(page.locator("main")).to_have_attribute("data-page", "queue")
    shot(page, "queue-error-timeout")
    assert client.list_tasks() == []  # nothing was queued

    fill_queue_form(page, function="add", args="[2, 3]", timeout="60")
    expect(page.locator("main")).to_have_attribute("data-page", "task")
    expect(by_testid(page, "flash")).to_be_visible()
    match = re.search(r"/tasks/(\d+)", page.url)
    assert match, page.url
    task_id = int(match.group(1))
    [task] = client.list_tasks()
    assert task.id == task_id and task.function_name == "add" and task.args == [2, 3]
    assert task.timeout == 60
    wait_status(client, task_id, "COMPLETED")
    # the status updates itself (the live stream); the runs table is drawn once: reload it
    reload_until(page, page.locator("tr[data-run-id]"), "COMPLETED", exact=False)
    expect(page.locator("tr[data-run-id]")).to_contain_text("5")
    shot(page, "queued-task")


# -- 5. the client role sees but cannot act --------------------------------------------------------


def test_client_role_cannot_act(secured, start_dashboard, page, new_page, shot):
    coordinator, worker, admin = secured
    task_id = admin.queue_task("add", pargs=[1, 1], group_name=NOBODY).id
    dash = start_dashboard(coordinator, token=TOKENS["admin"], require_login=True)

    # before logging in, every page leads to the login form; a bad token stays there
    goto(page, f"{dash.url}/tasks/{task_id}", "login")
    shot(page, "login")
    login(page, dash.url, "not-a-known-token-at-all", ok=False)
    shot(page, "login-refused")

    # the admin sees the buttons (another browser session)
    as_admin = new_page()
    login(as_admin, dash.url, TOKENS["admin"])
    goto(as_admin, f"{dash.url}/tasks/{task_id}", "task")
    expect(as_admin.locator('button[data-action="stop"]')).to_have_count(1)
    stop = form_of(as_admin.locator('button[data-action="stop"]'))
    shot(as_admin, "admin-task")
    goto(as_admin, f"{dash.url}/workers", "workers")
    kill = form_of(as_admin.locator('form[data-worker="w1"] button[data-action="kill"]'))
    shot(as_admin, "admin-workers")

    # the client sees every page, without a button
    login(page, dash.url, TOKENS["client"])
    for path, kind in (("/", "overview"), ("/tasks", "tasks"), (f"/tasks/{task_id}", "task"),
                       ("/workers", "workers"), ("/queue", "queue")):
        goto(page, f"{dash.url}{path}", kind)
        check_nav(page)
        expect(page.locator("button[data-action]")).to_have_count(0)
        if kind == "tasks":
            expect(page.locator(f'tr[data-task-id="{task_id}"]')).to_have_count(1)
        if kind == "workers":
            expect(page.locator('tr[data-worker="w1"]')).to_have_count(1)
        shot(page, f"client-{kind}")

    # and its POSTs, with its own session's CSRF token, are refused
    name, csrf = csrf_token(page)
    queue = (f"{dash.url}/queue", {"function": "add", "args": "[1, 1]", name: ""})
    for action, fields in (stop, kill, queue):
        assert name in fields, f"the admin's form to {action} has no {name} field: {fields}"
        response = page.request.post(action, form={**fields, name: csrf}, max_redirects=0)
        assert response.status == 403, f"POST {action} as client: {response.status}"
    assert status_of(admin, task_id) == "QUEUED"
    assert [t.id for t in admin.list_tasks()] == [task_id]  # nothing queued either
    assert worker.is_alive() and str(admin.get_workers()["w1"].status) == "ACTIVE"


# -- 6. a screenshot of every page -----------------------------------------------------------------


def test_every_page_has_a_screenshot(request, secured, start_dashboard, page, shot):
    coordinator, _, admin = secured
    job = JobGraph(admin, "tour")
    first = job.queue_task("add", pargs=[1, 2])
    second = job.queue_task("add", pargs=[3, 4])
    job.add_deps(second, first)
    job.validate()
    assert job.errors == {}
    wait_status(admin, second.id, "COMPLETED")
    dash = start_dashboard(coordinator, token=TOKENS["admin"], require_login=True)

    goto(page, f"{dash.url}/login", "login")
    shot(page, "login")
    login(page, dash.url, TOKENS["admin"])
    tour = {"overview": "/", "tasks": "/tasks", "task": f"/tasks/{second.id}",
            "workers": "/workers", "job": "/jobs/tour", "queue": "/queue"}
    for kind, path in tour.items():
        goto(page, f"{dash.url}{path}", kind)
        check_nav(page)
        shot(page, kind)
    test = request.node.name
    for kind in ("login", *tour):
        path: Path = SCREENSHOTS / f"{test}-{kind}.png"
        assert path.is_file() and path.stat().st_size > 0, path
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path

