// taskgrid dashboard: follows a task's live output and status on its page (server-sent
// events from /tasks/ID/events). Everything else is plain server-rendered HTML.
(function () {
  "use strict";
  var main = document.querySelector('main[data-page="task"]');
  var out = document.querySelector('pre[data-testid="output"]');
  if (!main || !out || !window.EventSource) { return; }
  var statusEl = document.querySelector('[data-testid="task-status"]');
  var progress = document.querySelector('[data-testid="progress"]');
  var runId = null;
  var fresh = true;     // the first chunk of a connection carries the whole output so far
  var cleared = false;  // a !clear! happened in this run: its last line is a progress line

  function lastLine(text) {
    var lines = text.replace(/\s+$/, "").split("\n");
    return lines[lines.length - 1];
  }

  var source = new EventSource("/tasks/" + encodeURIComponent(main.dataset.taskId) + "/events");
  out.dataset.stream = "connecting";
  source.addEventListener("open", function () {
    fresh = true;
    out.dataset.stream = "open";
  });
  source.addEventListener("output", function (e) {
    var c = JSON.parse(e.data);
    if (c.run_id !== runId) { cleared = false; }
    if (fresh || c.clear || c.run_id !== runId) {
      out.textContent = c.data;
    } else {
      out.textContent += c.data;
    }
    fresh = false;
    runId = c.run_id;
    if (c.clear) { cleared = true; }
    progress.textContent = cleared ? lastLine(out.textContent) : "";
  });
  source.addEventListener("status", function (e) {
    var s = JSON.parse(e.data);
    statusEl.textContent = s.status;
    statusEl.dataset.status = s.status;
    statusEl.className = "status status-" + s.status;
  });
  source.addEventListener("failed", function (e) {
    out.dataset.error = JSON.parse(e.data).message;
  });
  source.addEventListener("end", function () {
    source.close();
    out.dataset.stream = "ended";
  });
})();
