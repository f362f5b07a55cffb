"""Helpers of the browser tests: the dashboard's DOM contract, and waiting on conditions.

The contract the dashboard follows (selectors the tests use):

- every page: ``main[data-page=overview|tasks|task|workers|job|queue|login]``; nav links
  ``a[data-testid=nav-overview|nav-tasks|nav-workers|nav-queue]``.
- ``/``: ``[data-testid=count-STATUS]`` (a number), ``[data-testid=counts-table]``,
  ``svg[data-testid=throughput-chart]``, ``[data-testid=live-workers]``,
  ``[data-testid=oldest-due]``.
- ``/tasks``: ``form[data-testid=task-filters]`` (status select, group, function, name, uuid,
  created_after, created_before, order), rows ``tr[data-task-id]`` with ``td[data-col=status]``,
  ``a[data-testid=next-page]`` when more exist (50 per page).
- ``/tasks/ID``: ``task-status``, ``dl[data-testid=task-fields]``, ``waiting-reason``,
  ``waiting-for``, ``a[data-testid=job-link]``, runs ``tr[data-run-id]``, live output
  ``pre[data-testid=output]`` (server-sent events), ``[data-testid=progress]``, actions
  ``button[data-action=stop|requeue|enable|disable|delete]`` (POST forms confirmed with
  ``confirm()``), ``[data-testid=flash]`` after an action.
- ``/workers``: ``tr[data-worker=NAME]`` with ``td[data-col=status]``; ``form[data-worker=NAME]``
  and ``form[data-group=GROUP]`` with ``button[data-action=disable|resume|terminate|kill]``.
- ``/jobs/NAME``: ``svg[data-testid=job-graph]`` with nodes ``g[data-task-id]``.
- ``/queue``: ``form[data-testid=queue-form]`` (function, args, vars, group, timeout, repeats,
  period, retry_failed, priority, start_time, enabled); ``.field-error[data-field=FIELD]``.
- ``/login``: a form with ``input[name=token]`` and a submit button.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

#: where screenshots go: test-artifacts/screenshots/<test>-<page>.png at the repository root
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


def by_testid(page: Any, name: str) -> Any:
    """The locator of ``[data-testid=NAME]``."""
    return page.locator(f'[data-testid="{name}"]')


def goto(page: Any, url: str, kind: str) -> Any:
    """Open `url` and check that it is the `kind` page (``main[data-page=KIND]``)."""
    response = page.goto(url)
    assert response is not None and response.ok, f"GET {url}: {response and response.status}"
    expect(page.locator("main")).to_have_attribute("data-page", kind)
    return response


def submit(form: Any) -> None:
    """Click the submit button of `form`."""
    form.locator('button[type="submit"], input[type="submit"], button:not([type])').first.click()


def click_confirmed(page: Any, button: Any) -> None:
    """Click a button whose form asks ``confirm()`` first, and accept the dialog."""
    page.once("dialog", lambda dialog: dialog.accept())
    button.click()


def task_rows(page: Any) -> Any:
    """The task list's rows."""
    return page.locator("tr[data-task-id]")


def row_ids(page: Any) -> list[int]:
    """Task ids of the task list's rows, in page order."""
    return [int(v) for v in task_rows(page).evaluate_all(
        "rows => rows.map(r => r.getAttribute('data-task-id'))")]


def reload_until(page: Any, locator: Any, text: str, timeout_s: float = 15.0,
                 exact: bool = True) -> None:
    """Reload `page` until `locator` has (or, exact=False, contains) `text`.

    For values a page renders once (it does not update itself): each round waits on the
    condition for up to a second before reloading."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if exact:
                expect(locator).to_have_text(text, timeout=1000)
            else:
                expect(locator).to_contain_text(text, timeout=1000)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        page.reload()


def form_of(button: Any) -> tuple[str, dict[str, str]]:
    """What clicking `button` would POST: its form's absolute action and fields (the button's
    own name and value among them)."""
    expect(button).to_have_count(1)
    found = button.evaluate(
        # getAttribute: a form's `.action` is its input named "action" when it has one
        "b => ({action: new URL(b.form.getAttribute('action') || '', document.baseURI).href,"
        " fields: Object.fromEntries("
        "[...new FormData(b.form, b)].map(([k, v]) => [k, String(v)]))})"
    )
    return str(found["action"]), {str(k): str(v) for k, v in found["fields"].items()}


#: where a page keeps its session's CSRF token: (selector, attribute holding the token)
CSRF_PLACES = (('input[name="csrf"]', "value"), ('input[name="csrf_token"]', "value"),
               ('input[name="_csrf"]', "value"), ('meta[name="csrf-token"]', "content"),
               ('meta[name="csrf"]', "content"))


def csrf_token(page: Any) -> tuple[str, str]:
    """(field name, token) of the page's session's CSRF token: a hidden input, or a meta tag
    (then the field is taken to be ``csrf``)."""
    for selector, attribute in CSRF_PLACES:
        found = page.locator(selector)
        if found.count():
            value = found.first.get_attribute(attribute)
            if value:
                name = found.first.get_attribute("name") if attribute == "value" else "csrf"
                return str(name), str(value)
    raise AssertionError(f"no CSRF token on {page.url} (looked for {CSRF_PLACES})")
