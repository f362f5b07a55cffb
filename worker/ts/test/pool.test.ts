// The pool with real forked children and the conformance handlers: output capture,
// stops that need SIGKILL, and slots that are replaced before they run again.
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join as joinPath } from "node:path";
import { test } from "node:test";

import { join } from "../src/capture";
import { CommandPolicy } from "../src/command";
import { handlersOf, loadHandlers } from "../src/handlers";
import { Level, Logger } from "../src/log";
import { Pool } from "../src/pool";
import { keyOf, Outcome, type Result, type Task } from "../src/types";

const HANDLERS = joinPath(__dirname, "..", "conformance", "handlers.js");
const quiet = new Logger(Level.Error, "text", () => {});

function task(id: number, functionName: string, args: unknown[], extra: Partial<Task> = {}): Task {
  return {
    key: keyOf(id, 1), taskId: id, attempt: 1, runId: 100 + id, uuid: `u${id}`, functionName, taskName: functionName,
    args: JSON.stringify(args), vars: "{}", timeoutMs: 0, syncOutputMs: 0, ...extra,
  };
}

/** A pool and a way to wait for its free slots and its results. */
function harness(concurrency: number, killGraceMs = 500) {
  const results: Result[] = [];
  const waiters: (() => void)[] = [];
  const poke = (): void => {
    for (const w of waiters.splice(0)) w();
  };
  const pool = new Pool(
    { tasksPath: HANDLERS, concurrency, killGraceMs, commands: new CommandPolicy([]), log: quiet },
    (r) => {
      results.push(r);
      poke();
    },
    poke,
  );
  const until = async (cond: () => boolean, ms = 10_000): Promise<void> => {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) throw new Error("timed out waiting");
      await new Promise<void>((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  };
  return { pool, results, until, byId: (id: number) => results.find((r) => r.task.taskId === id) };
}

test("results, failures and output, fd level and per run", async () => {
  const h = harness(2);
  try {
    await h.until(() => h.pool.freeSlots() === 2);
    h.pool.submit(task(1, "add", [2, 3]));
    h.pool.submit(task(2, "clear_many", []));
    await h.until(() => h.results.length === 2);
    h.pool.submit(task(3, "fail", ["kaboom"]));
    await h.until(() => h.pool.freeSlots() >= 1 && h.results.length === 3);
    h.pool.submit(task(4, "whoami", []));
    await h.until(() => h.results.length === 4);
    assert.equal(h.byId(1)!.result, "5");
    assert.equal(join(h.byId(2)!.output), "d\n");
    assert.equal(h.byId(3)!.outcome, Outcome.Failed);
    assert.match(h.byId(3)!.traceback, /kaboom/);
    assert.equal(h.byId(4)!.result, JSON.stringify([4, "u4", 104]));
  } finally {
    await h.pool.close(2000);
  }
});

test("a stubborn run is killed after the grace, and its slot gets a fresh child", async () => {
  const h = harness(1, 300);
  const path = joinPath(tmpdir(), `stubborn-${process.pid}.txt`);
  rmSync(path, { force: true });
  try {
    await h.until(() => h.pool.freeSlots() === 1);
    const childBefore = h.pool.childPids()[0];
    h.pool.submit(task(1, "stubborn", [path, 10], { timeoutMs: 300 }));
    assert.equal(h.pool.freeSlots(), 0);
    await h.until(() => h.results.length === 1);
    const stoppedAt = Date.now() / 1000;
    assert.equal(h.results[0]!.outcome, Outcome.Timeout);
    const lines = readFileSync(path, "utf8").trim().split("\n");
    const last = Number(lines.at(-1)!.split(" ")[2]);
    assert.ok(stoppedAt - last < 0.3, "ticks went on after the run was reported");
    const first = Number(lines[0]!.split(" ")[2]);
    assert.ok(last - first >= 0.5 && last - first < 2, `ran ${last - first}s`); // timeout + grace
    await h.until(() => h.pool.freeSlots() === 1);
    assert.notEqual(h.pool.childPids()[0], childBefore);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(readFileSync(path, "utf8").trim().split("\n").length, lines.length, "the old child still ticks");
  } finally {
    rmSync(path, { force: true });
    await h.pool.close(2000);
  }
});

test("a stop ends a cooperative run STOPPED at once", async () => {
  const h = harness(1);
  try {
    await h.until(() => h.pool.freeSlots() === 1);
    h.pool.submit(task(1, "sleep_for", [30]));
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    assert.ok(h.pool.stop(keyOf(1, 1), Outcome.Stopped));
    assert.ok(!h.pool.stop(keyOf(1, 1), Outcome.Stopped)); // stops are re-sent; the first counts
    await h.until(() => h.results.length === 1);
    assert.equal(h.results[0]!.outcome, Outcome.Stopped);
    assert.ok(Date.now() - t0 < 400);
  } finally {
    await h.pool.close(2000);
  }
});

test("command tasks: exit codes, stderr tail, !clear!", async () => {
  const h = harness(1);
  try {
    await h.until(() => h.pool.freeSlots() === 1);
    const cmd = (id: number, args: string[]) =>
      task(id, "@command", [], { command: { executable: "/bin/sh", args, env: { X: "y" }, cwd: "" } });
    h.pool.submit(cmd(1, ["-c", 'echo first; echo "!clear!$X $TASKGRID_TASK_ID"']));
    await h.until(() => h.results.length === 1);
    h.pool.submit(cmd(2, ["-c", "echo oops >&2; exit 3"]));
    await h.until(() => h.results.length === 2);
    assert.equal(h.byId(1)!.result, '{"exit_code": 0}');
    assert.equal(join(h.byId(1)!.output), "y 1\n");
    assert.equal(h.byId(2)!.outcome, Outcome.Failed);
    assert.match(h.byId(2)!.traceback, /^exit code 3\nlast lines of stderr:\noops\n$/);
  } finally {
    await h.pool.close(2000);
  }
});

test("handler modules: a tasks object, named exports, an ES module", async () => {

  const f = (): number => 1;
  assert.deepEqual([...handlersOf({ tasks: { a: f }, b: f }).keys()], ["a"]);
  assert.deepEqual([...handlersOf({ default: { tasks: { a: f } } }).keys()], ["a"]);
  assert.deepEqual([...handlersOf({ a: f, b: 2, default: { c: f } }).keys()].sort(), ["a", "c"]);
  const conformance = [...(await loadHandlers(HANDLERS)).keys()];
  assert.ok(conformance.includes("stubborn") && conformance.includes("ts_only"));
});
