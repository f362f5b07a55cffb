// The agent against a scripted fake coordinator (a real gRPC server): the session rules
// that a real coordinator makes hard to provoke.
import assert from "node:assert/strict";
import { join as joinPath } from "node:path";
import { test } from "node:test";

import { Metadata, type sendUnaryData, Server, ServerCredentials, type ServerUnaryCall, status } from "@grpc/grpc-js";

import { WorkerStatus } from "../gen/taskgrid/v1/common";
import {
  type HeartbeatRequest,
  type HeartbeatResponse,
  type LeaseRequest,
  type LeaseResponse,
  type RegisterResponse,
  type ReportRequest,
  type ReportResponse,
  WorkerServiceService,
} from "../gen/taskgrid/v1/worker";
import { Agent } from "../src/agent";
import { Coordinators } from "../src/channel";
import { Logger } from "../src/log";
import { Pool } from "../src/pool";

const HANDLERS = joinPath(__dirname, "..", "conformance", "handlers.js");

type Failure = { code: number; details: string; metadata?: Metadata };
type Handler<Req, Res> = (req: Req, n: number) => Res | Failure;

interface Script {
  register?: Handler<unknown, RegisterResponse>;
  lease?: Handler<LeaseRequest, LeaseResponse>;
  heartbeat?: Handler<HeartbeatRequest, HeartbeatResponse>;
  report?: Handler<ReportRequest, ReportResponse>;
}

const ACTIVE = WorkerStatus.WORKER_STATUS_ACTIVE;

function session(n: number, leaseTakesReports = false): RegisterResponse {
  return {
    session: { workerId: n, sessionToken: `tok${n}` },
    heartbeat: 0.1,
    status: ACTIVE,
    deadAfter: 0.3,
    leaseTakesReports,
  };
}

function idle(statusValue = ACTIVE): LeaseResponse {
  return { leases: [], status: statusValue, stop: [], stale: [] };
}

/** Starts a fake coordinator; calls[method] counts what it got, requests keeps them. */
async function fake(script: Script) {
  const calls: Record<string, number> = {};
  const requests: Record<string, unknown[]> = {};
  const unary = <Req, Res>(name: string, fn: Handler<Req, Res> | undefined, fallback: Res) =>
    (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>) => {
      const n = (calls[name] = (calls[name] ?? 0) + 1);
      (requests[name] ??= []).push(call.request);
      const out = fn ? fn(call.request, n) : fallback;
      const delay = name === "lease" && (out as LeaseResponse).leases?.length === 0 ? 50 : 0;
      setTimeout(() => {
        if (out && typeof out === "object" && "code" in out && "details" in out) {
          const { code, details, metadata } = out as Failure;
          cb({ code, details, metadata } as never);
        }
        else cb(null, out as Res);
      }, delay);
    };
  const server = new Server();
  server.addService(WorkerServiceService, {
    register: unary("register", script.register, session(1)),
    lease: unary("lease", script.lease, idle()),
    startRuns: unary("startRuns", undefined, { leases: [], stale: [] }),
    heartbeat: unary("heartbeat", script.heartbeat, { status: ACTIVE, stop: [], heartbeat: 0.1, stale: [] }),
    sendOutput: unary("sendOutput", undefined, { stale: [] }),
    report: unary("report", script.report, { stale: [] }),
    release: unary("release", undefined, { stale: [] }),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { address: `127.0.0.1:${port}`, calls, requests, close: () => server.forceShutdown() };
}

async function agentFor(address: string, name = "w1", concurrency = 1) {
  const lines: string[] = [];
  const log = new Logger(10, "text", (line) => { lines.push(line); if (process.env["TG_DEBUG"]) process.stderr.write(line); });
  const rpc = await Coordinators.create(address, { token: "", tls: false, caFile: "", certFile: "", keyFile: "", serverName: "", insecure: false }, log);
  const agent = new Agent(
    {
      workerName: name, groups: ["main"], heartbeatMs: 100, maxEmptyRuns: 0, concurrency, killGraceMs: 500,
      functions: ["sleep_for"], commands: false, coordinator: address, security: { tls: false, clientCert: false }, log,
    },
    rpc,
  );
  agent.pool = new Pool(
    { tasksPath: HANDLERS, concurrency, killGraceMs: 500, commands: null, log },
    (r) => agent.onFinish(r),
    () => agent.wakeMain.notify(),
  );
  return { agent, lines };
}

function lease(taskId: number, args: unknown[]) {
  return {
    ref: { taskId, attempt: 1 }, runId: 1, uuid: "u", taskName: "sleep_for", groupName: "main", functionName: "sleep_for",
    args: JSON.stringify(args), vars: "{}", timeout: 60, syncOutput: 0, started: true, startTime: new Date(),
    command: undefined, traceparent: "",
  };
}

test("a name kept by another live worker: retried for about dead_after, then exit 6 naming it", async () => {
  const f = await fake({ register: () => ({ code: status.ALREADY_EXISTS, details: "name in use" }) });
  try {
    const { agent, lines } = await agentFor(f.address, "twin");
    const t0 = Date.now();
    const code = await agent.run();
    assert.equal(code, 6);
    assert.ok(Date.now() - t0 >= 450, "gave up too early"); // 3 heartbeats + 2 of margin = 0.5 s
    assert.ok((f.calls["register"] ?? 0) >= 3);
    assert.ok(lines.some((l) => l.includes("ERROR") && l.includes('\\"twin\\"')), lines.join(""));
  } finally {
    f.close();
  }
});

test("NOT_FOUND: the run is stopped and never reported, the worker registers again; KILL ends it", async () => {
  let registered = 0;
  const f = await fake({
    register: (_req, n) => {
      registered = n;
      return session(n);
    },
    lease: (_req, n) => (n === 1 ? { leases: [lease(7, [30])], status: ACTIVE, stop: [], stale: [] } : idle()),
    heartbeat: (req) => {
      if (req.session?.workerId === 1) return { code: status.NOT_FOUND, details: "unknown session" };
      return { status: WorkerStatus.WORKER_STATUS_KILL, stop: [], heartbeat: 0.1, stale: [] };
    },
  });
  try {
    const { agent } = await agentFor(f.address);
    const code = await agent.run();
    assert.equal(code, 0);
    assert.equal(registered, 2);
    const reported = (f.requests["report"] ?? []) as ReportRequest[];
    assert.deepEqual(reported.flatMap((r) => r.reports), [], "a report about a lease of the lost session");
    const beats = (f.requests["heartbeat"] ?? []) as HeartbeatRequest[];
    assert.ok(beats.some((b) => b.leaving), "no leaving heartbeat");
  } finally {
    f.close();
  }
});

test("a stale lease named by a heartbeat is stopped and never reported; held leases are listed", async () => {
  const f = await fake({
    lease: (_req, n) => (n === 1 ? { leases: [lease(9, [30])], status: ACTIVE, stop: [], stale: [] } : idle()),
    heartbeat: (req, n) => {
      if (n >= 2 && req.running.some((r) => r.taskId === 9)) {
        return { status: ACTIVE, stop: [], heartbeat: 0.1, stale: [{ taskId: 9, attempt: 1 }] };
      }
      return { status: n > 6 ? WorkerStatus.WORKER_STATUS_TERMINATE : ACTIVE, stop: [], heartbeat: 0.1, stale: [] };
    },
  });
  try {
    const { agent, lines } = await agentFor(f.address);
    assert.equal(await agent.run(), 0);
    const beats = (f.requests["heartbeat"] ?? []) as HeartbeatRequest[];
    assert.ok(beats.some((b) => b.running.some((r) => r.taskId === 9)), "the lease was never listed");
    const reported = ((f.requests["report"] ?? []) as ReportRequest[]).flatMap((r) => r.reports);
    assert.deepEqual(reported, []);
    assert.ok(lines.some((l) => l.includes("no longer ours") && l.includes("9:1")));
  } finally {
    f.close();
  }
});

test("an older coordinator's FAILED_PRECONDITION naming the lease: that report is dropped, never sent again", async () => {
  const f = await fake({
    lease: (_req, n) => (n === 1 ? { leases: [lease(11, [0.05])], status: ACTIVE, stop: [], stale: [] } : idle()),
    report: () => {
      const metadata = new Metadata();
      metadata.set("taskgrid-stale-leases", "11:1");
      return { code: status.FAILED_PRECONDITION, details: "stale lease", metadata };
    },
    heartbeat: (_req, n) => ({ status: n > 8 ? WorkerStatus.WORKER_STATUS_TERMINATE : ACTIVE, stop: [], heartbeat: 0.1, stale: [] }),
  });
  try {
    const { agent } = await agentFor(f.address);
    assert.equal(await agent.run(), 0);
    const reports = ((f.requests["report"] ?? []) as ReportRequest[]).flatMap((r) => r.reports);
    assert.equal(reports.filter((r) => r.ref?.taskId === 11).length, 1, "the rejected report was sent again");
    const beats = (f.requests["heartbeat"] ?? []) as HeartbeatRequest[];
    assert.ok(!beats.slice(-2).some((b) => b.running.some((r) => r.taskId === 11)), "the dropped lease is still held");
  } finally {
    f.close();
  }
});

const TWO = { leases: [lease(21, [0.2]), lease(22, [0.2])], status: ACTIVE, stop: [], stale: [] };

/** Two runs ending together against a coordinator that may take reports on Lease; the worker
 * leaves once both are reported (by whichever call). */
async function twoRuns(takesReports: boolean, lease: Handler<LeaseRequest, LeaseResponse>) {
  const reported = new Set<number>();
  let given = false; // both tasks, once both slots are free
  const note = (reports: { ref?: { taskId: number } }[]) => reports.forEach((r) => reported.add(r.ref?.taskId ?? 0));
  const f = await fake({
    register: (_req, n) => session(n, takesReports),
    lease: (req, n) => {
      if (!given && req.maxTasks < 2) return idle();
      const out = given ? lease(req, n) : TWO;
      given = true;
      if (!("code" in out)) note(req.reports);
      return out;
    },
    report: (req) => {
      note(req.reports);
      return { stale: [] };
    },
    heartbeat: () => ({ status: reported.size === 2 ? WorkerStatus.WORKER_STATUS_TERMINATE : ACTIVE, stop: [], heartbeat: 0.1, stale: [] }),
  });
  try {
    const { agent } = await agentFor(f.address, "w1", 2);
    agent.lingerMs = 5000; // the runs end close together, but not within 2 ms on a busy machine
    assert.equal(await agent.run(), 0);
    const ids = (reports: { ref?: { taskId: number } }[]) => reports.map((p) => p.ref?.taskId ?? 0).sort();
    const leases = ((f.requests["lease"] ?? []) as LeaseRequest[]).map((r) => ids(r.reports));
    const reports = ((f.requests["report"] ?? []) as ReportRequest[]).map((r) => ids(r.reports));
    return { leases, reports };
  } finally {
    f.close();
  }
}

test("ACK+FETCH: two runs ending together ride on one Lease, no Report call", async () => {
  const { leases, reports } = await twoRuns(true, () => idle());
  assert.deepEqual(leases.filter((l) => l.length > 0), [[21, 22]]);
  assert.deepEqual(reports, []);
});

test("without leaseTakesReports no report is ever put on a Lease", async () => {
  const { leases, reports } = await twoRuns(false, () => idle());
  assert.deepEqual(leases.filter((l) => l.length > 0), []);
  assert.deepEqual(reports.flat().sort(), [21, 22]); // in one call or two
});

test("a Lease carrying reports that fails: they go again once, by Report, never on a Lease", async () => {
  const { leases, reports } = await twoRuns(true, (req) => {
    if (req.reports.length > 0) return { code: status.UNAVAILABLE, details: "gone a moment" };
    return idle();
  });
  assert.deepEqual(leases.filter((l) => l.length > 0), [[21, 22]]);
  assert.deepEqual(reports, [[21, 22]]);
});
