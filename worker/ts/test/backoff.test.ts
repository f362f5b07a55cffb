import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff, jittered } from "../src/backoff";

test("delays double up to the cap, jittered in [0.5, 1)", () => {
  const low = new Backoff(100, 1000, () => 0);
  assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => low.next()), [50, 100, 200, 400, 500, 500]);
  const high = new Backoff(100, 1000, () => 0.999999);
  const d = high.next();
  assert.ok(d >= 99 && d < 100, String(d));
});

test("reset starts over", () => {
  const b = new Backoff(100, 5000, () => 0);
  b.next();
  b.next();
  b.reset();
  assert.equal(b.next(), 50);
});

test("a huge failure count stays at the cap", () => {
  assert.equal(jittered(100, 5000, 1000, () => 0), 2500);
});

test("jitter stays within bounds", () => {
  const b = new Backoff();
  for (let i = 0; i < 50; i++) {
    const d = b.next();
    assert.ok(d >= 50 && d < 5000, String(d));
  }
});
