import assert from "node:assert/strict";
import { test } from "node:test";

import { parse, UsageError } from "../src/config";

const base = ["--tasks", "t.js"];

test("defaults match the Go worker", () => {
  const o = parse(base, {});
  assert.equal(o.coordinator, "127.0.0.1:50051");
  assert.deepEqual(o.groups, ["main"]);
  assert.equal(o.heartbeat, 3);
  assert.equal(o.concurrency, 1);
  assert.equal(o.killGrace, 5);
  assert.equal(o.maxEmptyRuns, 0);
  assert.equal(o.logLevel, "INFO");
  assert.equal(o.logFormat, "text");
  assert.equal(o.allowCommands, false);
  assert.match(o.name, /#\d+$/);
});

test("both --flag value and --flag=value, repeatable groups", () => {
  const o = parse(["--tasks=t.js", "--heartbeat", "0.5", "--group=a", "--group", "b", "--name=w1", "--concurrency=3"], {});
  assert.equal(o.tasks, "t.js");
  assert.equal(o.heartbeat, 0.5);
  assert.deepEqual(o.groups, ["a", "b"]);
  assert.equal(o.name, "w1");
  assert.equal(o.concurrency, 3);
});

test("--allow-executable implies --allow-commands; commands alone need no --tasks", () => {
  const o = parse(["--allow-executable", "/bin/sh"], {});
  assert.equal(o.allowCommands, true);
  assert.deepEqual(o.executables, ["/bin/sh"]);
  assert.equal(parse(["--allow-commands"], {}).tasks, "");
});

test("the environment fills what the command line left out", () => {
  const env = { TASKGRID_TOKEN: "secret", TASKGRID_HEARTBEAT: "2", TASKGRID_ALLOW_COMMANDS: "true", TASKGRID_GROUP: "x,y" };
  const o = parse([], env);
  assert.equal(o.token, "secret");
  assert.equal(o.heartbeat, 2);
  assert.equal(o.allowCommands, true);
  assert.deepEqual(o.groups, ["x", "y"]);
  assert.equal(parse(["--heartbeat", "4", "--tasks", "t.js"], env).heartbeat, 4);
});

test("bad values are usage errors", () => {
  const bad: string[][] = [
    [],
    [...base, "--heartbeat", "0"],
    [...base, "--heartbeat", "soon"],
    [...base, "--concurrency", "0"],
    [...base, "--concurrency", "1.5"],
    [...base, "--kill-grace", "-1"],
    [...base, "--max-empty-runs", "-2"],
    [...base, "--log-format", "xml"],
    [...base, "--log-level", "LOUD"],
    [...base, "--no-such-flag"],
    [...base, "stray"],
  ];
  for (const argv of bad) assert.throws(() => parse(argv, {}), UsageError, argv.join(" "));
});
