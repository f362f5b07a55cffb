import assert from "node:assert/strict";
import { test } from "node:test";

import { join, OutputBuffer, partialMarkerLen, split } from "../src/capture";

function feedAll(pieces: (string | Buffer)[], live = false): { chunks: ReturnType<OutputBuffer["take"]>; text: string } {
  const b = new OutputBuffer();
  const s = b.stream();
  const chunks = [];
  for (const p of pieces) {
    s.write(typeof p === "string" ? Buffer.from(p) : p);
    if (live) chunks.push(...b.take(false));
  }
  chunks.push(...b.take(true));
  return { chunks, text: join(chunks) };
}

test("only the text after the last marker survives", () => {
  assert.equal(feedAll(["a\n", "!clear!b\n", "c!clear!d\n"]).text, "d\n");
  assert.equal(feedAll(["50%\n!clear!100%\n"]).text, "100%\n");
  assert.equal(feedAll(["no marker"]).text, "no marker");
});

test("a marker split across writes still clears", () => {
  for (let cut = 1; cut < 7; cut++) {
    const marker = "!clear!";
    const r = feedAll(["before", marker.slice(0, cut), marker.slice(cut) + "after"], true);
    assert.equal(r.text, "after", `cut at ${cut}`);
    assert.ok(r.chunks.some((c) => c.clear));
  }
});

test("the chunk after a marker has clear set, seq grows by one", () => {
  const b = new OutputBuffer();
  const s = b.stream();
  s.write("one\n");
  const first = b.take(false);
  s.write("!clear!two\n");
  const second = b.take(false);
  assert.deepEqual(first, [{ seq: 1, data: "one\n", clear: false }]);
  assert.deepEqual(second, [{ seq: 2, data: "two\n", clear: true }]);
  assert.deepEqual(b.take(true), []);
});

test("a live take holds back a partial marker, the final one flushes it", () => {
  const b = new OutputBuffer();
  const s = b.stream();
  s.write("x!cle");
  assert.deepEqual(b.take(false).map((c) => c.data), ["x"]);
  assert.deepEqual(b.take(true).map((c) => c.data), ["!cle"]);
  assert.equal(partialMarkerLen("ab!cl"), 3);
  assert.equal(partialMarkerLen("abc"), 0);
});

test("a UTF-8 character split across reads is kept whole; invalid bytes become U+FFFD", () => {
  const euro = Buffer.from("€", "utf8");
  assert.equal(feedAll([euro.subarray(0, 1), euro.subarray(1)], true).text, "€");
  assert.equal(feedAll([Buffer.from([0x61, 0xff, 0x62])]).text, "a\ufffdb");
  assert.equal(feedAll([euro.subarray(0, 2)]).text, "\ufffd");
});

test("streams keep their own UTF-8 state", () => {
  const b = new OutputBuffer();
  const out = b.stream();
  const err = b.stream();
  const e = Buffer.from("é", "utf8");
  out.write(e.subarray(0, 1));
  err.write(Buffer.from("E"));
  out.write(e.subarray(1));
  assert.equal(join(b.take(true)), "Eé");
});

test("chunks are cut at the byte limit, never inside a character", () => {
  assert.deepEqual(split("abcdef", 4), ["abcd", "ef"]);
  assert.deepEqual(split("ééé", 3), ["é", "é", "é"]);
  const b = new OutputBuffer(4);
  b.stream().write("abcdefghij");
  const chunks = b.take(true);
  assert.deepEqual(chunks.map((c) => c.seq), [1, 2, 3]);
  assert.equal(join(chunks), "abcdefghij");
});

test("writes after close are dropped", () => {
  const b = new OutputBuffer();
  const s = b.stream();
  s.write("kept");
  b.close();
  s.write("dropped");
  assert.equal(join(b.take(true)), "kept");
});
