import assert from "node:assert/strict";
import { test } from "node:test";

import { channelCredentials, isLoopbackTarget, parseCoordinators } from "../src/channel";

const plain = { token: "", tls: false, caFile: "", certFile: "", keyFile: "", serverName: "", insecure: false };

test("coordinator lists", () => {
  assert.deepEqual(
    parseCoordinators(" a:1, [::1]:2 ,unix:/tmp/s").map((e) => e.target || `${e.host}:${e.port}`),
    ["a:1", "::1:2", "unix:/tmp/s"],
  );
  for (const bad of ["a:1,,b:2", "a:1,", "nohost", "a:0", "a:x", "::1:5", "a:70000"]) {
    assert.throws(() => parseCoordinators(bad), Error, bad);
  }
});

test("loopback targets", () => {
  assert.ok(isLoopbackTarget("127.0.0.1:1"));
  assert.ok(isLoopbackTarget("localhost:1, [::1]:2"));
  assert.ok(isLoopbackTarget("unix:/tmp/s"));
  assert.ok(!isLoopbackTarget("127.0.0.1:1,10.0.0.1:2"));
  assert.ok(!isLoopbackTarget("coord:1"));
});

test("a token is never sent in plain text beyond this machine unless --insecure", () => {
  assert.throws(() => channelCredentials({ ...plain, token: "t" }, "10.0.0.1:1"), /refusing to send a token/);
  channelCredentials({ ...plain, token: "t", insecure: true }, "10.0.0.1:1");
  channelCredentials({ ...plain, token: "t" }, "127.0.0.1:1");
  assert.throws(() => channelCredentials({ ...plain, token: "a b" }, "127.0.0.1:1"), /printable/);
  assert.throws(() => channelCredentials({ ...plain, certFile: "c.pem" }, "127.0.0.1:1"), /go together/);
});
