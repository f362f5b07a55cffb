// When live output and finished runs are sent, and in what batches (the Go
// worker's reporter). Each cycle takes the due output of every run (every
// sync_output seconds, or about every second when that is 0) into one SendOutput
// call, then every finished run into one Report call, so the number of calls grows
// with time, not with tasks. It is the only sender of output, so a run's live
// chunks always reach the outbox before its report leaves it.
import { type ServiceError, status } from "@grpc/grpc-js";

import type { ReportResponse, SendOutputResponse } from "../gen/taskgrid/v1/worker";
import type { Agent } from "./agent";
import { isOutage, isRefusal, isSessionGone, keysOf, ref, staleKeys } from "./agent";
import { Backoff } from "./backoff";
import type { OutputBatch } from "./outbox";
import { type Key, Outcome, type Result, type Task } from "./types";
import { Waker } from "./wake";

export const DEFAULT_OUTPUT_INTERVAL_MS = 1000;
/** How many times a batch rejected the old way (FAILED_PRECONDITION naming leases) is sent again. */
export const MAX_RESENDS = 3;
/** How long finished runs wait for a Lease being prepared to carry them (ACK+FETCH) before
 * they go by Report after all; the main loop wakes us once it took them. */
export const CARRY_WAIT_MS = 50;

const RUN_STATUS: Record<Outcome, number> = {
  [Outcome.Completed]: 2,
  [Outcome.Failed]: 3,
  [Outcome.Timeout]: 4,
  [Outcome.Stopped]: 5,
};

enum Delivery {
  Sent, // applied, except for the leases the answer names stale
  Retry, // not delivered (coordinator away): keep it, back off, no limit
  Failed, // the coordinator failed on it: retry a bounded number of times
  Refused, // never applicable
  Rejected, // old-style FAILED_PRECONDITION naming stale leases: nothing applied
  Drop, // the session is gone, and every lease with it
}

interface Answer {
  delivery: Delivery;
  stale: Key[];
  err?: ServiceError;
}

function outputInterval(task: Task): number {
  return task.syncOutputMs > 0 ? task.syncOutputMs : DEFAULT_OUTPUT_INTERVAL_MS;
}

function chunkPB(key: Key, c: { seq: number; data: string; clear: boolean }) {
  const r = ref(key);
  return { taskId: r.taskId, attempt: r.attempt, seq: c.seq, data: c.data, clear: c.clear, runId: 0 };
}

export function reportPB(r: Result) {
  const report: Record<string, unknown> = {
    ref: ref(r.task.key),
    status: RUN_STATUS[r.outcome],
    traceback: Buffer.from(r.traceback, "utf8").toString("utf8"), // protobuf strings must be UTF-8
    output: r.output.map((c) => chunkPB(r.task.key, c)),
  };
  if (r.result !== undefined) report["result"] = r.result;
  return report;
}

export class Reporter {
  private readonly waker = new Waker();
  private readonly outputDue = new Map<Key, number>();
  private flushing = false;
  private readonly idleWaiters: (() => void)[] = [];

  constructor(private readonly a: Agent) {}

  wake(): void {
    this.waker.notify();
  }

  addReport(result: Result): void {
    this.a.outbox.addReport(result);
    this.outputDue.delete(result.task.key);
    this.wake();
  }

  private isIdle(): boolean {
    return !this.flushing && this.a.outbox.isEmpty();
  }

  private signalIdle(): void {
    if (!this.isIdle()) return;
    for (const w of this.idleWaiters.splice(0)) w();
  }

  /** Waits until nothing is left to send and no call is in flight; false on timeout. */
  async waitIdle(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.isIdle()) {
      if (!this.a.session) return false;
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 100));
        this.idleWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return true;
  }

  async loop(): Promise<void> {
    const backoff = new Backoff();
    while (!this.a.stopping) {
      let { due, ok } = this.nextDue();
      while (!ok) {
        if (this.a.stopping) return;
        await this.waker.wait(due === 0 ? -1 : Math.max(0, due - Date.now()));
        ({ due, ok } = this.nextDue());
      }
      // Gather the reports of runs ending close together into one call.
      const gatherUntil = Date.now() + this.a.lingerMs;
      while (this.a.pool.activeKeys().length > 0 && this.a.outbox.hasReports() && Date.now() < gatherUntil) {
        await this.waker.wait(gatherUntil - Date.now());
      }
      // Leave them to the Lease the main loop is about to make.
      const carryUntil = Date.now() + CARRY_WAIT_MS;
      while (this.a.outbox.hasCarriable() && this.a.isCarrying() && Date.now() < carryUntil) {
        await this.waker.wait(carryUntil - Date.now());
      }
      this.flushing = true;
      const delivered = await this.flushOnce();
      this.flushing = false;
      this.signalIdle();
      if (delivered) {
        backoff.reset();
        continue;
      }
      if (this.a.stopping) return;
      await this.waker.wait(backoff.next());
    }
  }

  /** Queued reports for a Lease to carry; none while a flush is under way, as it may hold live
   * chunks of a run just ended, which must reach the outbox (and that run's report) first. */
  takeForLease(): Result[] {
    return this.flushing ? [] : this.a.outbox.takeReports(true);
  }

  /** ok when a send is due now; otherwise the time of the next due output (0: none). */
  private nextDue(): { due: number; ok: boolean } {
    const active = this.a.pool.active();
    const live = new Set<Key>();
    for (const run of active) {
      live.add(run.task.key);
      if (!this.outputDue.has(run.task.key)) this.outputDue.set(run.task.key, run.started + outputInterval(run.task));
    }
    let next = 0;
    const now = Date.now();
    let dueNow = false;
    for (const [key, due] of this.outputDue) {
      if (!live.has(key)) {
        this.outputDue.delete(key);
        continue;
      }
      dueNow ||= due <= now;
      if (next === 0 || due < next) next = due;
    }
    if (!this.a.session) {
      this.signalIdle();
      return { due: 0, ok: false };
    }
    const waiting = this.a.outbox.due(now);
    if (waiting.due || dueNow) return { due: now, ok: true };
    if (waiting.next !== 0 && (next === 0 || waiting.next < next)) next = waiting.next;
    this.signalIdle();
    return { due: next, ok: false };
  }

  private async flushOnce(): Promise<boolean> {
    const now = Date.now();
    for (const run of this.a.pool.active()) {
      const key = run.task.key;
      if (this.a.dropped.has(key)) continue;
      const due = this.outputDue.get(key);
      if (due !== undefined && due > now) continue;
      this.outputDue.set(key, now + outputInterval(run.task));
      this.a.outbox.addChunks(key, run.output.take(false));
    }
    return (await this.sendOutput()) && (await this.sendReports());
  }

  private async sendOutput(): Promise<boolean> {
    const outbox = this.a.outbox;
    for (let batch = outbox.takeOutput(); batch.size > 0; batch = outbox.takeOutput()) {
      if (!(await this.deliverOutput(batch))) return false;
    }
    const now = Date.now();
    for (let batch = outbox.takeTroubledOutput(now); batch; batch = outbox.takeTroubledOutput(now)) {
      if (!(await this.deliverOutput(batch))) return false;
    }
    return true;
  }

  private async deliverOutput(batch: OutputBatch): Promise<boolean> {
    const outbox = this.a.outbox;
    for (let round = 0; ; round++) {
      const chunks = [...batch].flatMap(([key, items]) => items.map((c) => chunkPB(key, c)));
      const answer = await this.deliver("SendOutput", async (session) => {
        const r = await this.a.call<SendOutputResponse>("sendOutput", { session, chunks });
        return r.stale;
      });
      switch (answer.delivery) {
        case Delivery.Sent:
          outbox.delivered(batch.keys());
          return true;
        case Delivery.Rejected: {
          const n = batch.size;
          for (const key of answer.stale) batch.delete(key);
          if (batch.size === 0) return true;
          if (batch.size === n || round >= MAX_RESENDS) {
            this.a.dropOutput([...batch.keys()], "SendOutput refused as stale", answer.err);
            return true;
          }
          break;
        }
        case Delivery.Failed:
          this.a.dropOutput(outbox.failOutput(batch, Date.now()), "the coordinator kept failing on it", answer.err);
          return true;
        case Delivery.Retry:
          outbox.restoreOutput(batch);
          return false;
        case Delivery.Refused:
          this.a.dropOutput([...batch.keys()], "SendOutput refused", answer.err);
          return true;
        default:
          return true;
      }
    }
  }

  private async sendReports(): Promise<boolean> {
    const outbox = this.a.outbox;
    for (let batch = outbox.takeReports(); batch.length > 0; batch = outbox.takeReports()) {
      if (!(await this.deliverReports(batch))) return false;
    }
    const now = Date.now();
    for (let batch = outbox.takeTroubledReport(now); batch; batch = outbox.takeTroubledReport(now)) {
      if (!(await this.deliverReports(batch))) return false;
    }
    return true;
  }

  private async deliverReports(batch: Result[]): Promise<boolean> {
    const outbox = this.a.outbox;
    for (let round = 0; ; round++) {
      const reports = batch.map(reportPB);
      const answer = await this.deliver("Report", async (session) => {
        const r = await this.a.call<ReportResponse>("report", { session, reports });
        return r.stale;
      });
      const keys = batch.map((r) => r.task.key);
      switch (answer.delivery) {
        case Delivery.Sent:
          this.a.log.debug("reported runs", { runs: batch.length, stale: answer.stale.length });
          outbox.settleReports(batch);
          outbox.delivered(keys);
          return true;
        case Delivery.Rejected: {
          const n = batch.length;
          const gone = new Set(answer.stale);
          batch = batch.filter((r) => !gone.has(r.task.key));
          if (batch.length === 0) return true;
          if (batch.length === n || round >= MAX_RESENDS) {
            this.a.abandonReports(batch.map((r) => r.task.key), "Report refused as stale", answer.err);
            return true;
          }
          break;
        }
        case Delivery.Failed: {
          const given = outbox.failReports(batch, Date.now());
          this.a.abandonReports(given, `the coordinator failed on them ${outbox.tries} times`, answer.err);
          return true;
        }
        case Delivery.Retry:
          outbox.restoreReports(batch);
          return false;
        case Delivery.Refused:
          this.a.abandonReports(keys, "Report refused", answer.err);
          return true;
        default:
          outbox.settleReports(batch);
          return true;
      }
    }
  }

  /** One call carrying a batch, and what became of it; stale leases are dropped here. */
  private async deliver(
    method: string,
    call: (session: { workerId: number; sessionToken: string }) => Promise<{ taskId: number; attempt: number }[]>,
  ): Promise<Answer> {
    const a = this.a;
    const session = a.session;
    const generation = a.generation;
    if (!session) return { delivery: Delivery.Drop, stale: [] };
    try {
      const stale = keysOf(await call(session));
      a.noteSuccess();
      if (stale.length > 0) a.dropLeases(stale, method);
      return { delivery: Delivery.Sent, stale };
    } catch (e) {
      const err = e as ServiceError;
      const stale = staleKeys(err.metadata);
      if (err.code === status.FAILED_PRECONDITION && stale.length > 0) {
        a.dropLeases(stale, method);
        return { delivery: Delivery.Rejected, stale, err };
      }
      if (isSessionGone(err.code)) {
        a.loseSession(generation, err.code);
        return { delivery: Delivery.Drop, stale: [], err };
      }
      if (err.code === status.FAILED_PRECONDITION || isRefusal(err.code)) return { delivery: Delivery.Refused, stale: [], err };
      a.logFailure(method, err);
      if (isOutage(err.code)) return { delivery: Delivery.Retry, stale: [], err };
      return { delivery: Delivery.Failed, stale: [], err };
    }
  }
}
