import assert from "node:assert/strict";
import { test } from "node:test";

import { CommandPolicy, commandEnv, describeExit, lookup, Tail } from "../src/command";

test("the allow-list compares resolved paths; other programs are refused", () => {
  const policy = new CommandPolicy(["sh"]);
  assert.equal(policy.resolve("sh", ""), lookup("sh", ""));
  assert.throws(() => policy.resolve("/bin/true", ""), /not in this worker's --allow-executable list/);
  assert.throws(() => new CommandPolicy(["/no/such/program"]), /--allow-executable \/no\/such\/program/);
  assert.throws(() => new CommandPolicy([]).resolve("no-such-program-xyz", ""), /not found in PATH/);
  assert.throws(() => new CommandPolicy([]).resolve("", ""), /no executable/);
});

test("the environment drops the worker's token and adds the run's ids", () => {
  const env = commandEnv({ TASKGRID_TOKEN: "secret", KEEP: "1" }, { executable: "x", args: [], env: { A: "b" }, cwd: "" },
    { taskId: 7, uuid: "u", runId: 9, attempt: 2 });
  assert.equal(env["TASKGRID_TOKEN"], undefined);
  assert.equal(env["KEEP"], "1");
  assert.equal(env["A"], "b");
  assert.deepEqual([env["TASKGRID_TASK_ID"], env["TASKGRID_RUN_ID"], env["TASKGRID_ATTEMPT"]], ["7", "9", "2"]);
});

test("exits and the stderr tail", () => {
  assert.equal(describeExit(3, null), "exit code 3");
  assert.equal(describeExit(null, "SIGSEGV"), "killed by signal SIGSEGV");
  const tail = new Tail();
  for (let i = 0; i < 30; i++) tail.write(Buffer.from(`line ${i}\n`));
  const lines = tail.lastLines(20).trim().split("\n");
  assert.equal(lines.length, 20);
  assert.equal(lines[0], "line 10");
});
