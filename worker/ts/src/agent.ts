// The worker's side of the protocol (docs/protocol.md), after the Go agent: three
// loops on one event loop, none of which waits on a task (tasks run in child
// processes, so nothing a handler does can delay them):
//
//   - main: register, then long-poll Lease for exactly the free slots (wait_s =
//     heartbeat) and start what comes back; while DISABLED too, so that resume
//     reaches it at once; hand back leases it will not run (Release);
//   - heartbeat (heartbeat.ts): every `heartbeat` seconds, with every held lease;
//   - reporter (reporter.ts): live output and finished runs in SendOutput and Report batches
//     (finished runs ride on the next Lease instead when the coordinator takes them there).
//
// Commands (DISABLED, TERMINATE, KILL, stop lease X) arrive in Lease and Heartbeat
// answers. NOT_FOUND means the session is gone: runs are stopped and dropped, and
// the worker registers again. Stale leases named in an answer are stopped and never
// mentioned again (fencing).
import { hostname } from "node:os";

import { type Metadata, type ServiceError, status } from "@grpc/grpc-js";

import { WorkerStatus } from "../gen/taskgrid/v1/common";
import type { Lease, LeaseResponse, RegisterResponse, ReleaseResponse } from "../gen/taskgrid/v1/worker";
import { Backoff, DEFAULT_SERVER_ERROR_TRIES } from "./backoff";
import type { Coordinators, Method } from "./channel";
import { Heartbeat } from "./heartbeat";
import type { Logger } from "./log";
import { Outbox } from "./outbox";
import type { Pool } from "./pool";
import { Reporter, reportPB } from "./reporter";
import { tlsHint } from "./tlshint";
import { compareKeys, type Key, keyOf, Outcome, type Result, splitKey, type Task } from "./types";
import { Waker } from "./wake";

export const VERSION = "0.1.0";
export const RPC_TIMEOUT_MS = 10_000;
/** How long a busy worker waits for more free slots (or more finished runs) before one call. */
export const LEASE_GATHER_MS = 2;
export const EXIT_FLUSH_MS = 10_000;
export const AUTH_ATTEMPTS = 5;
export const EXIT_REJECTED = 1;
export const EXIT_AUTH = 5;
export const EXIT_NAME_TAKEN = 6;
export const STALE_LEASES_KEY = "taskgrid-stale-leases";
export const CAPABILITY_COMMAND = "command";

export interface AgentConfig {
  workerName: string;
  groups: string[];
  heartbeatMs: number;
  maxEmptyRuns: number;
  concurrency: number;
  killGraceMs: number;
  functions: string[];
  commands: boolean;
  coordinator: string; // as given, for messages
  security: { tls: boolean; clientCert: boolean }; // for the hints on connection failures
  log: Logger;
}

export interface Session {
  workerId: number;
  sessionToken: string;
}

export function ref(key: Key): { taskId: number; attempt: number } {
  return splitKey(key);
}

export function keysOf(refs: { taskId: number; attempt: number }[] | undefined): Key[] {
  return (refs ?? []).map((r) => keyOf(r.taskId, r.attempt));
}

/** Leases named by the old `taskgrid-stale-leases` trailer ("task:attempt,..."). */
export function staleKeys(md: Metadata | undefined): Key[] {
  const keys: Key[] = [];
  if (!md) return keys;
  for (const value of md.get(STALE_LEASES_KEY)) {
    for (const item of String(value).split(",")) {
      const m = /^\s*(\d+):(\d+)\s*$/.exec(item);
      if (m) keys.push(keyOf(Number(m[1]), Number(m[2])));
    }
  }
  return keys;
}

export function isSessionGone(code: number): boolean {
  return code === status.NOT_FOUND || code === status.UNAUTHENTICATED;
}

export function isOutage(code: number): boolean {
  return code === status.UNAVAILABLE || code === status.DEADLINE_EXCEEDED;
}

export function isRefusal(code: number): boolean {
  return code === status.INVALID_ARGUMENT || code === status.PERMISSION_DENIED;
}

function statusName(s: WorkerStatus): string {
  return (WorkerStatus[s] ?? String(s)).replace(/^WORKER_STATUS_/, "");
}

export function keyList(keys: Key[]): string {
  return keys.join(",");
}

function taskFromLease(lease: Lease): Task {
  const taskId = lease.ref?.taskId ?? 0;
  const attempt = lease.ref?.attempt ?? 0;
  const task: Task = {
    key: keyOf(taskId, attempt),
    taskId,
    attempt,
    runId: lease.runId,
    uuid: lease.uuid,
    functionName: lease.functionName,
    taskName: lease.taskName,
    args: lease.args,
    vars: lease.vars,
    timeoutMs: lease.timeout * 1000,
    syncOutputMs: lease.syncOutput * 1000,
  };
  if (lease.command) {
    task.command = {
      executable: lease.command.executable,
      args: lease.command.args,
      env: lease.command.env,
      cwd: lease.command.cwd,
    };
  }
  return task;
}

export class Agent {
  readonly log: Logger;
  readonly outbox = new Outbox();
  readonly reporter: Reporter;
  readonly heartbeat: Heartbeat;
  pool!: Pool;

  session: Session | null = null;
  generation = 0; // bumped when a session is lost: late answers of old calls are moot
  status: WorkerStatus = WorkerStatus.WORKER_STATUS_ACTIVE;
  leaving = ""; // why the worker exits once its runs are over; "" while serving
  private killing = false;
  intervalMs: number;
  private emptyRuns = 0;
  private holdUntil = 0;
  private quietUntil = 0;
  readonly dropped = new Set<Key>();
  readonly unfinished = new Set<Key>();
  private readonly toRelease = new Set<Key>();
  private failedCalls = 0;
  private authFailures = 0;
  exitCode = 0;
  private deadAfterMs = 0;
  private nameTakenAt = 0;
  private releaseFailures = 0;
  readonly wakeMain = new Waker();
  stopping = false;
  // ACK+FETCH (docs/protocol.md §7): finished runs ride on the next Lease when the
  // coordinator said lease_takes_reports.
  private takesReports = false; // from the last RegisterResponse
  private carrying = false; // the main loop leases next: the reporter leaves the reports to it
  private leaseInFlight = false; // runs ending now go by Report: no Lease will carry them soon
  /** LEASE_GATHER_MS, for the Lease and the Report alike (tests lengthen it). */
  lingerMs = LEASE_GATHER_MS;

  constructor(
    readonly cfg: AgentConfig,
    readonly rpc: Coordinators,
  ) {
    this.log = cfg.log;
    this.intervalMs = cfg.heartbeatMs;
    this.reporter = new Reporter(this);
    this.heartbeat = new Heartbeat(this);
  }

  /** Calls the coordinator; rejects with a ServiceError. */
  call<T>(method: Method, request: unknown, timeoutMs: number = RPC_TIMEOUT_MS): Promise<T> {
    return this.rpc.call<T>(method, request, timeoutMs);
  }

  /** Serves until told to leave; resolves to the exit code. */
  async run(): Promise<number> {
    const loops = [this.heartbeat.loop(), this.reporter.loop()];
    await this.mainLoop();
    if (await this.reporter.waitIdle(EXIT_FLUSH_MS)) {
      await this.sayLeaving();
    } else {
      this.log.error("exiting with undelivered reports", { leases: this.outbox.heldKeys().length });
    }
    this.stopping = true;
    this.reporter.wake();
    this.heartbeat.wake();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(loops), new Promise((resolve) => (timer = setTimeout(resolve, RPC_TIMEOUT_MS)))]);
    clearTimeout(timer);
    await this.pool.close(this.cfg.killGraceMs + 5000);
    this.rpc.close();
    this.log.info("worker exiting", { reason: this.leaving });
    return this.exitCode;
  }

  /** One last heartbeat so the coordinator marks this worker gone at once (best effort). */
  private async sayLeaving(): Promise<void> {
    if (!this.session) return;
    try {
      await this.call("heartbeat", { session: this.session, running: [], rssBytes: 0, draining: false, leaving: true }, 2000);
    } catch (err) {
      this.log.debug("leaving heartbeat failed", { error: (err as Error).message });
    }
  }

  /** Leaves like TERMINATE: no more leases, running tasks finish, exit 0; the coordinator is told at once. */
  requestDrain(): void {
    this.applyStatus(WorkerStatus.WORKER_STATUS_TERMINATE);
    this.heartbeat.wake();
  }

  /** Leaves like KILL: running tasks are stopped and reported STOPPED, exit 0. */
  requestExit(): void {
    this.applyStatus(WorkerStatus.WORKER_STATUS_KILL);
  }

  // ---- main loop ----------------------------------------------------------------

  private async mainLoop(): Promise<void> {
    const backoff = new Backoff();
    for (;;) {
      if (!this.session || this.toRelease.size > 0 || !this.mayLease()) this.stopCarrying(); // no Lease comes next
      if (
        this.leaving &&
        this.pool.activeKeys().length === 0 &&
        this.unfinished.size === 0 &&
        (this.toRelease.size === 0 || !this.session)
      ) {
        return;
      }
      if (this.leaving && !this.session) {
        await this.wakeMain.wait(-1); // nothing to send: wait for the runs to end
        continue;
      }
      if (this.session && this.toRelease.size === 0 && !this.mayLease()) {
        let wakeAt = this.holdUntil;
        if (this.status === WorkerStatus.WORKER_STATUS_DISABLED && this.quietUntil > wakeAt) wakeAt = this.quietUntil;
        const hold = wakeAt - Date.now();
        await this.wakeMain.wait(hold > 0 ? hold : -1);
        continue;
      }
      const hasSession = this.session !== null;
      let ok: boolean;
      if (!hasSession) ok = await this.registerOnce();
      else if (this.toRelease.size > 0) ok = await this.releaseOnce();
      else ok = await this.leaseOnce();
      if (ok) backoff.reset();
      else if (!hasSession) await this.wakeMain.wait(this.registerRetryCap(backoff.next()));
      else await this.wakeMain.wait(backoff.next());
    }
  }

  private mayLease(): boolean {
    const now = Date.now();
    const wanted =
      this.status === WorkerStatus.WORKER_STATUS_ACTIVE ||
      (this.status === WorkerStatus.WORKER_STATUS_DISABLED && now >= this.quietUntil);
    return !this.leaving && wanted && now >= this.holdUntil && this.pool.freeSlots() > 0;
  }

  /** Hands finished runs left for a Lease back to the reporter. */
  private stopCarrying(): void {
    if (!this.carrying) return;
    this.carrying = false;
    this.reporter.wake();
  }

  /** The main loop is about to lease and takes the queued reports along. */
  isCarrying(): boolean {
    return this.carrying;
  }

  private async leaseOnce(): Promise<boolean> {
    this.carrying = this.takesReports;
    // Batching: with some slots still busy, wait a moment for them to free up, so one call
    // asks for several tasks (a lone task on an idle worker is never delayed).
    const gatherUntil = Date.now() + this.lingerMs;
    let waited = false;
    while (this.pool.activeKeys().length > 0 && this.pool.freeSlots() < this.cfg.concurrency && Date.now() < gatherUntil) {
      await this.wakeMain.wait(gatherUntil - Date.now());
      waited = true;
    }
    if (waited && (!this.mayLease() || this.toRelease.size > 0)) {
      this.stopCarrying();
      return true;
    }
    const session = this.session;
    const generation = this.generation;
    const free = this.pool.freeSlots();
    const wasBusy = this.pool.activeKeys().length > 0;
    const interval = this.intervalMs;
    const disabled = this.status === WorkerStatus.WORKER_STATUS_DISABLED;
    const calling = session !== null && free > 0;
    const carried = this.carrying && calling ? this.reporter.takeForLease() : []; // in flight, so still held, until settled
    this.carrying = false;
    this.reporter.wake(); // it may have left reports to this call
    if (!session || !calling) return true;
    this.leaseInFlight = true;
    const sent = Date.now();
    let response: LeaseResponse;
    try {
      response = await this.call<LeaseResponse>(
        "lease",
        { session, maxTasks: free, waitS: interval / 1000, prefetch: false, reports: carried.map(reportPB) },
        interval + RPC_TIMEOUT_MS,
      );
    } catch (e) {
      const err = e as ServiceError;
      const ok = this.failed("Lease", err, generation);
      this.restoreCarried(carried, generation);
      return ok;
    } finally {
      this.leaseInFlight = false;
    }
    this.noteSuccess();
    if (carried.length > 0 && generation === this.generation) {
      const stale = keysOf(response.stale);
      if (stale.length > 0) this.dropLeases(stale, "Lease");
      const keys = carried.map((r) => r.task.key);
      this.outbox.settleReports(carried);
      this.outbox.delivered(keys);
      this.log.debug("reported on Lease", { runs: carried.length, stale: stale.length });
      this.reporter.wake(); // the outbox may be empty now (waitIdle)
    }
    this.log.debug("lease answered", { asked: free, got: response.leases.length, stop: response.stop.length });
    this.applyStatus(response.status);
    this.applyStops(keysOf(response.stop));
    if (disabled) this.disabledPoll(response, Date.now() - sent);
    if (generation !== this.generation) return true; // the session was lost meanwhile, and these leases with it
    for (const lease of response.leases) this.start(taskFromLease(lease));
    if (response.stop.length > 0 && response.leases.length === 0) this.holdUntil = Date.now() + this.intervalMs;
    this.countEmptyRun(response.leases.length > 0 || wasBusy);
    return true;
  }

  /** Puts back the reports of a failed Lease: the reporter sends them again with Report, which
   * lists those already applied as stale. Not those no longer in flight: the session was lost
   * meanwhile, or their leases were dropped as stale. */
  private restoreCarried(carried: Result[], generation: number): void {
    const back = carried.filter((r) => this.outbox.isInFlight(r.task.key));
    if (back.length === 0) return;
    this.outbox.settleReports(back);
    if (generation === this.generation) this.outbox.restoreByReport(back);
    this.reporter.wake();
  }

  /** A coordinator that answers a DISABLED Lease at once (an older one) is asked again only after a heartbeat. */
  private disabledPoll(response: LeaseResponse, tookMs: number): void {
    if (
      tookMs < this.intervalMs / 2 &&
      response.status === WorkerStatus.WORKER_STATUS_DISABLED &&
      response.leases.length === 0 &&
      response.stop.length === 0
    ) {
      this.quietUntil = Date.now() + this.intervalMs;
    }
  }

  private start(task: Task): void {
    const key = task.key;
    this.log.debug("leased", { task: task.taskId, attempt: task.attempt, function: task.functionName });
    if (this.leaving) {
      this.toRelease.add(key);
      return;
    }
    if (this.unfinished.has(key)) {
      this.log.warn("lease received twice", { task: task.taskId, attempt: task.attempt });
      return;
    }
    try {
      this.pool.submit(task);
    } catch (err) {
      this.log.warn("cannot start a lease, handing it back", { task: task.taskId, attempt: task.attempt, error: (err as Error).message });
      this.toRelease.add(key);
      return;
    }
    this.unfinished.add(key);
    this.reporter.wake();
  }

  /** web2py's max_empty_runs: consecutive empty leases while idle end the worker. */
  private countEmptyRun(hadWork: boolean): void {
    if (hadWork) {
      this.emptyRuns = 0;
      return;
    }
    if (this.status !== WorkerStatus.WORKER_STATUS_ACTIVE) return;
    this.emptyRuns++;
    if (this.cfg.maxEmptyRuns > 0 && this.emptyRuns >= this.cfg.maxEmptyRuns && !this.leaving) {
      this.log.info("no work after empty lease calls, leaving", { empty_runs: this.emptyRuns });
      this.leaving = "max_empty_runs";
    }
  }

  // ---- registration -------------------------------------------------------------

  private async registerOnce(): Promise<boolean> {
    const cfg = this.cfg;
    const functions = [...cfg.functions].sort();
    const request = {
      workerName: cfg.workerName,
      groupNames: cfg.groups,
      functions,
      capacity: Math.max(1, cfg.concurrency),
      language: "typescript",
      capabilities: cfg.commands ? [CAPABILITY_COMMAND] : [],
      heartbeat: cfg.heartbeatMs / 1000,
      hostname: hostname(),
      pid: process.pid,
      version: VERSION,
    };
    let response: RegisterResponse;
    try {
      response = await this.call<RegisterResponse>("register", request);
    } catch (e) {
      const err = e as ServiceError;
      switch (err.code) {
        case status.UNAUTHENTICATED:
        case status.PERMISSION_DENIED:
          this.credentialsRejected(err, "give a worker or admin token with --token or $TASKGRID_TOKEN");
          break;
        case status.INVALID_ARGUMENT:
          this.logFailure("Register", err);
          this.leave("registration rejected", EXIT_REJECTED);
          break;
        case status.ALREADY_EXISTS:
          this.nameTaken(err);
          break;
        default: {
          const sec = this.cfg.security;
          const hint = tlsHint(err.details ?? "", sec.tls, sec.clientCert);
          if (hint && (err.code === status.UNAVAILABLE || err.code === status.UNKNOWN)) {
            this.credentialsRejected(err, `a TLS setting, likely: ${hint}`);
          } else {
            this.logFailure("Register", err);
          }
        }
      }
      return false;
    }
    this.noteSuccess();
    if (this.nameTakenAt) {
      this.log.info("worker name free again", { name: cfg.workerName, waited_ms: Date.now() - this.nameTakenAt });
    }
    this.nameTakenAt = 0;
    if (response.deadAfter > 0) this.deadAfterMs = response.deadAfter * 1000;
    this.authFailures = 0;
    if (!response.session) return false;
    this.takesReports = response.leaseTakesReports;
    this.session = { workerId: response.session.workerId, sessionToken: response.session.sessionToken };
    this.intervalMs = response.heartbeat > 0 ? response.heartbeat * 1000 : cfg.heartbeatMs;
    this.emptyRuns = 0;
    this.log.info("worker registered", {
      name: cfg.workerName,
      id: response.session.workerId,
      groups: cfg.groups.join(","),
      functions: functions.length,
      commands: cfg.commands,
    });
    this.applyStatus(response.status);
    this.heartbeat.wake();
    this.reporter.wake();
    return true;
  }

  private credentialsRejected(err: ServiceError, fix: string): void {
    this.authFailures++;
    if (this.authFailures === 1) {
      this.log.error(`coordinator rejected this worker's credentials: ${fix}`, {
        coordinator: this.cfg.coordinator,
        code: status[err.code],
        details: err.details,
        attempts: AUTH_ATTEMPTS,
      });
    }
    if (this.authFailures >= AUTH_ATTEMPTS) {
      this.log.error("credentials rejected too many times in a row: leaving", { failures: this.authFailures });
      this.leave("credentials rejected", EXIT_AUTH);
    }
  }

  leave(reason: string, code: number): void {
    if (!this.leaving) {
      this.leaving = reason;
      this.exitCode = code;
    }
    this.wakeMain.notify();
  }

  /** dead_after plus two heartbeats: a crashed earlier process of this name is declared dead by then. */
  private nameTakenBudget(): number {
    const deadAfter = this.deadAfterMs > 0 ? this.deadAfterMs : 3 * this.intervalMs;
    return deadAfter + 2 * this.intervalMs;
  }

  private nameTaken(err: ServiceError): void {
    const now = Date.now();
    const first = this.nameTakenAt === 0;
    if (first) this.nameTakenAt = now;
    const waited = now - this.nameTakenAt;
    const budget = this.nameTakenBudget();
    const name = this.cfg.workerName;
    if (first) {
      this.log.warn("another live worker uses this worker name; retrying until it is declared dead", {
        name,
        for_ms: budget,
        details: err.details,
      });
    }
    if (waited >= budget) {
      this.log.error(
        `worker name ${JSON.stringify(name)} is already in use by another live worker: give each worker a unique --name (or stop the other one)`,
        { name, waited_ms: waited },
      );
      this.leave("worker name taken", EXIT_NAME_TAKEN);
    }
  }

  private registerRetryCap(delay: number): number {
    if (!this.nameTakenAt) return delay;
    const left = this.nameTakenAt + this.nameTakenBudget() - Date.now();
    return Math.max(0, Math.min(delay, this.intervalMs, left));
  }

  // ---- commands -----------------------------------------------------------------

  /** Obeys the worker status the coordinator sent (or a signal asked for). */
  applyStatus(s: WorkerStatus): void {
    let stopAll = false;
    if (s === WorkerStatus.WORKER_STATUS_KILL && !this.killing) {
      this.log.info("KILL: stopping running tasks, then leaving");
      if (!this.leaving) this.leaving = "KILL";
      this.killing = true;
      stopAll = true;
    } else if (s === WorkerStatus.WORKER_STATUS_TERMINATE && !this.leaving) {
      this.log.info("TERMINATE: finishing running tasks, then leaving");
      this.leaving = "TERMINATE";
    } else if (s === WorkerStatus.WORKER_STATUS_ACTIVE || s === WorkerStatus.WORKER_STATUS_DISABLED) {
      if (s !== this.status && !this.leaving) {
        this.log.info("worker status changed", { status: statusName(s) });
        this.status = s;
      }
    }
    this.wakeMain.notify();
    if (stopAll) this.pool.stopAll(Outcome.Stopped);
  }

  applyStops(keys: Key[]): void {
    for (const key of keys) {
      if (this.pool.stop(key, Outcome.Stopped)) this.log.info("stopping task on request", { lease: key });
    }
  }

  /** The pool's callback: queue the report (unless the lease was dropped) and free the slot. */
  onFinish(result: Result): void {
    const key = result.task.key;
    this.log.debug("run ended", { lease: key, outcome: Outcome[result.outcome] });
    if (this.takesReports && !this.leaseInFlight && !this.leaving && this.session) {
      this.carrying = true; // the main loop leases next: the report rides along
    }
    if (this.dropped.has(key)) this.dropped.delete(key);
    else this.reporter.addReport(result);
    this.unfinished.delete(key); // only now: its report is queued
    this.holdUntil = 0;
    this.wakeMain.notify();
  }

  private async releaseOnce(): Promise<boolean> {
    const session = this.session;
    const generation = this.generation;
    const keys = [...this.toRelease].sort(compareKeys);
    if (!session || keys.length === 0) return true;
    try {
      const response = await this.call<ReleaseResponse>("release", { session, leases: keys.map(ref) });
      this.releaseFailures = 0;
      this.noteSuccess();
      const stale = keysOf(response.stale);
      if (stale.length > 0) this.log.debug("Release: leases already gone", { leases: keyList(stale) });
      this.log.info("handed back leases", { leases: keyList(keys) });
      this.forgetRelease(keys);
      return true;
    } catch (e) {
      const err = e as ServiceError;
      this.releaseFailures++;
      const final = isRefusal(err.code) || (err.code === status.FAILED_PRECONDITION && staleKeys(err.metadata).length === 0);
      if (final || (!isSessionGone(err.code) && this.releaseFailures >= DEFAULT_SERVER_ERROR_TRIES)) {
        this.log.warn("Release failed; the coordinator will take these leases back itself", {
          leases: keyList(keys),
          code: status[err.code],
          details: err.details,
          calls: this.releaseFailures,
        });
        this.releaseFailures = 0;
        this.forgetRelease(keys);
        return true;
      }
      return this.failed("Release", err, generation);
    }
  }

  private forgetRelease(keys: Key[]): void {
    for (const key of keys) this.toRelease.delete(key);
    this.wakeMain.notify();
  }

  // ---- failures -----------------------------------------------------------------

  /** Reacts to a failed call; true when the caller may go on without a backoff. */
  failed(method: string, err: ServiceError, generation: number): boolean {
    if (isSessionGone(err.code)) {
      this.loseSession(generation, err.code);
      return true;
    }
    const stale = staleKeys(err.metadata);
    if (err.code === status.FAILED_PRECONDITION && stale.length > 0) {
      this.dropLeases(stale, method);
      return true;
    }
    this.logFailure(method, err);
    return false;
  }

  /** Logs a failed call; an outage is logged once, then only counted. */
  logFailure(method: string, err: ServiceError): void {
    if (err.code === status.INVALID_ARGUMENT) {
      this.log.error("call rejected as invalid", { method, details: err.details });
      return;
    }
    this.failedCalls++;
    if (this.failedCalls === 1) {
      this.log.warn("call failed, retrying with backoff", { method, code: status[err.code] ?? String(err.code), details: err.details });
    } else {
      this.log.debug("call failed again", { method, code: status[err.code] });
    }
  }

  noteSuccess(): void {
    if (this.failedCalls > 0) this.log.info("coordinator answering again", { failed_calls: this.failedCalls });
    this.failedCalls = 0;
  }

  /** The coordinator says these leases are no longer ours: stop their runs, never send anything about them again. */
  dropLeases(keys: Key[], method: string): void {
    const held = new Set(this.heldKeys());
    const active = new Set(this.pool.activeKeys());
    const fresh: Key[] = [];
    const running: Key[] = [];
    for (const key of keys) {
      if (held.has(key)) fresh.push(key);
      if (!this.dropped.has(key) && (this.unfinished.has(key) || active.has(key))) {
        this.dropped.add(key);
        running.push(key);
      }
      this.toRelease.delete(key);
    }
    this.outbox.discard(keys);
    if (fresh.length > 0) {
      this.log.warn("coordinator says these leases are no longer ours: dropping them", { method, leases: keyList(fresh) });
    }
    for (const key of running) this.pool.stop(key, Outcome.Stopped);
  }

  /** Gives up on these reports: whatever they owe is dropped and Release hands them back. */
  abandonReports(keys: Key[], why: string, err: ServiceError | undefined): void {
    if (keys.length === 0) return;
    this.log.error(`giving up on reports (${why}): handing their leases back`, {
      leases: keyList(keys),
      code: err ? status[err.code] : "",
      details: err?.details ?? "",
    });
    this.outbox.discard(keys);
    if (this.session) {
      for (const key of keys) this.toRelease.add(key);
      this.wakeMain.notify();
    }
  }

  dropOutput(keys: Key[], why: string, err: ServiceError | undefined): void {
    if (keys.length === 0) return;
    this.log.error(`dropping live output (${why}); the runs go on`, {
      leases: keyList(keys),
      code: err ? status[err.code] : "",
      details: err?.details ?? "",
    });
  }

  /** NOT_FOUND: the coordinator forgot this worker; stop every run, drop the reports, register again. */
  loseSession(generation: number, code: number): void {
    if (generation !== this.generation || !this.session) return;
    this.log.warn("session lost: stopping runs, registering again", { code: status[code] });
    this.session = null;
    this.generation++;
    const running = this.pool.activeKeys();
    for (const key of running) this.dropped.add(key);
    for (const key of this.unfinished) this.dropped.add(key);
    this.toRelease.clear();
    this.outbox.clear();
    this.wakeMain.notify();
    for (const key of running) this.pool.stop(key, Outcome.Stopped);
  }

  /** Every lease the worker holds: running, finishing, with something unsent, or to hand back; minus dropped ones. */
  heldKeys(): Key[] {
    const held = new Set<Key>([...this.pool.activeKeys(), ...this.unfinished, ...this.outbox.heldKeys(), ...this.toRelease]);
    return [...held].filter((k) => !this.dropped.has(k)).sort(compareKeys);
  }
}
