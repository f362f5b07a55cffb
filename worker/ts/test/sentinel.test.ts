import assert from "node:assert/strict";
import { test } from "node:test";

import { SentinelScanner, sentinelOf } from "../src/sentinel";

test("bytes before the sentinel are the run's, after it nobody's", () => {
  const s = new SentinelScanner();
  assert.equal(s.push(Buffer.from("early")).length, 0); // before expect
  s.expect("t1");
  const out = s.push(Buffer.concat([Buffer.from("hello"), sentinelOf("t1"), Buffer.from("late")]));
  assert.equal(out.toString(), "hello");
  assert.ok(s.seen);
  assert.equal(s.push(Buffer.from("more")).length, 0);
});

test("a sentinel split across reads at every point is found", () => {
  const sentinel = sentinelOf("abc");
  for (let cut = 1; cut < sentinel.length; cut++) {
    const s = new SentinelScanner();
    s.expect("abc");
    const a = s.push(Buffer.concat([Buffer.from("x"), sentinel.subarray(0, cut)]));
    assert.equal(s.seen, false);
    const b = s.push(sentinel.subarray(cut));
    assert.equal(Buffer.concat([a, b]).toString(), "x", `cut ${cut}`);
    assert.ok(s.seen);
  }
});

test("another run's sentinel is plain output; end releases what was held", () => {
  const s = new SentinelScanner();
  s.expect("new");
  const other = sentinelOf("old");
  const out = s.push(other);
  assert.equal(s.seen, false);
  assert.equal(Buffer.concat([out, s.end()]).equals(other), true);
});
