import assert from "node:assert/strict";
import { test } from "node:test";

import { Outbox } from "../src/outbox";
import { keyOf, Outcome, type Result, type Task } from "../src/types";

function task(id: number): Task {
  return {
    key: keyOf(id, 1), taskId: id, attempt: 1, runId: 0, uuid: "u", functionName: "f", taskName: "f",
    args: "[]", vars: "{}", timeoutMs: 0, syncOutputMs: 0,
  };
}

function result(id: number, seqs: number[] = []): Result {
  return {
    task: task(id), outcome: Outcome.Completed, result: "1", traceback: "",
    output: seqs.map((seq) => ({ seq, data: `s${seq}`, clear: false })), started: 0,
  };
}

test("a report carries its run's unsent chunks in seq order, and is held until settled", () => {
  const o = new Outbox();
  o.addChunks(keyOf(1, 1), [{ seq: 1, data: "s1", clear: false }]);
  o.addReport(result(1, [2]));
  assert.equal(o.takeOutput().size, 0); // the report takes them
  const batch = o.takeReports();
  assert.deepEqual(batch[0]!.output.map((c) => c.seq), [1, 2]);
  assert.deepEqual(o.heldKeys(), [keyOf(1, 1)]);
  o.settleReports(batch);
  assert.ok(o.isEmpty());
});

test("a restored batch goes first; a troubled lease is given up after the tries", () => {
  const o = new Outbox(2, 1);
  o.addReport(result(1));
  o.addReport(result(2));
  const batch = o.takeReports();
  o.restoreReports(batch);
  assert.deepEqual(o.takeReports().map((r) => r.task.taskId), [1, 2]);
  o.addReport(result(3));
  const b3 = o.takeReports();
  assert.deepEqual(o.failReports(b3, Date.now()), []);
  assert.equal(o.takeReports().length, 0); // troubled: travels alone, after its backoff
  const again = o.takeTroubledReport(Date.now() + 10_000)!;
  assert.deepEqual(o.failReports(again, Date.now()), [keyOf(3, 1)]);
});

test("discard forgets a lease", () => {
  const o = new Outbox();
  o.addChunks(keyOf(1, 1), [{ seq: 1, data: "x", clear: false }]);
  o.addReport(result(2));
  o.discard([keyOf(1, 1), keyOf(2, 1)]);
  assert.ok(o.isEmpty());
});
