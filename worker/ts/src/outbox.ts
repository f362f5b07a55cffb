// What the worker owes the coordinator: live chunks not sent yet (by lease) and
// finished runs not reported yet, in the order they finished (the Go worker's
// Outbox). Chunks of a finished run travel inside its report, in seq order, so a
// run's live chunks never arrive after its report. A batch that could not be
// delivered is put back. A lease whose delivery failed with a coordinator error
// (INTERNAL, UNKNOWN) is "troubled": it travels alone, after its own backoff, and
// is given up after `tries` such failures in a row.
import { DEFAULT_BACKOFF_CAP_MS, DEFAULT_SERVER_ERROR_BACKOFF_MS, DEFAULT_SERVER_ERROR_TRIES, jittered } from "./backoff";
import type { Chunk, Key, Result } from "./types";

/** Bounds the output of one SendOutput or Report call (gRPC's 4 MB default limit). */
export const MAX_BATCH_BYTES = 2 * 1024 * 1024;
/** Bounds the reports of one Report call. */
export const MAX_BATCH_REPORTS = 500;

interface Trouble {
  failures: number;
  notBefore: number;
}

function size(chunks: Chunk[]): number {
  let n = 0;
  for (const c of chunks) n += Buffer.byteLength(c.data);
  return n;
}

function withOutput(r: Result, earlier: Chunk[]): Result {
  const merged = [...earlier, ...r.output].sort((a, b) => a.seq - b.seq);
  return { ...r, output: merged };
}

export type OutputBatch = Map<Key, Chunk[]>;

export class Outbox {
  private readonly chunks = new Map<Key, Chunk[]>();
  private readonly reports = new Map<Key, Result>();
  private order: Key[] = [];
  private readonly inFlight = new Set<Key>();
  private readonly troubled = new Map<Key, Trouble>();
  private readonly byReport = new Set<Key>(); // back from a failed Lease: never carried by a Lease again

  constructor(
    readonly tries: number = DEFAULT_SERVER_ERROR_TRIES,
    private readonly retryBaseMs: number = DEFAULT_SERVER_ERROR_BACKOFF_MS,
    private readonly maxBytes: number = MAX_BATCH_BYTES,
    private readonly maxCount: number = MAX_BATCH_REPORTS,
  ) {}

  addChunks(key: Key, chunks: Chunk[]): void {
    if (chunks.length === 0) return;
    this.chunks.set(key, [...(this.chunks.get(key) ?? []), ...chunks]);
  }

  addReport(r: Result): void {
    if (!this.reports.has(r.task.key)) this.order.push(r.task.key);
    this.reports.set(r.task.key, r);
  }

  /** Whether something may be sent now; otherwise when a troubled lease may be retried (0: never). */
  due(now: number): { due: boolean; next: number } {
    let next = 0;
    const consider = (key: Key): boolean => {
      const t = this.troubled.get(key);
      if (!t || t.notBefore <= now) return true;
      if (next === 0 || t.notBefore < next) next = t.notBefore;
      return false;
    };
    for (const key of this.reports.keys()) if (consider(key)) return { due: true, next: 0 };
    for (const key of this.chunks.keys()) {
      if (!this.reports.has(key) && consider(key)) return { due: true, next: 0 };
    }
    return { due: false, next };
  }

  private ready(key: Key, now: number): boolean {
    const t = this.troubled.get(key);
    return !t || t.notBefore <= now;
  }

  hasReports(): boolean {
    return this.reports.size > 0;
  }

  /** A report waits that a Lease may carry (ACK+FETCH). */
  hasCarriable(): boolean {
    for (const key of this.reports.keys()) if (!this.troubled.has(key) && !this.byReport.has(key)) return true;
    return false;
  }

  isInFlight(key: Key): boolean {
    return this.inFlight.has(key);
  }

  isEmpty(): boolean {
    return this.reports.size === 0 && this.chunks.size === 0 && this.inFlight.size === 0;
  }

  /** Leases with something unsent or in flight: still held, so heartbeats name them. */
  heldKeys(): Key[] {
    return [...new Set([...this.reports.keys(), ...this.chunks.keys(), ...this.inFlight])];
  }

  /** Live chunks of runs without a report, up to the batch size; troubled leases left out. */
  takeOutput(): OutputBatch {
    const batch: OutputBatch = new Map();
    let total = 0;
    for (const [key, chunks] of this.chunks) {
      if (this.reports.has(key) || this.troubled.has(key)) continue;
      if (batch.size > 0 && total + size(chunks) > this.maxBytes) break;
      batch.set(key, chunks);
      this.chunks.delete(key);
      total += size(chunks);
    }
    return batch;
  }

  /** Reports, oldest first, each with its unsent chunks; in flight until settled or restored.
   * carrying: for a Lease to carry, leaving out those back from a failed Lease. */
  takeReports(carrying = false): Result[] {
    const batch: Result[] = [];
    let total = 0;
    const kept: Key[] = [];
    for (let i = 0; i < this.order.length; i++) {
      const key = this.order[i]!;
      if (this.troubled.has(key) || (carrying && this.byReport.has(key))) {
        kept.push(key);
        continue;
      }
      const n = size(this.chunks.get(key) ?? []) + size(this.reports.get(key)?.output ?? []);
      if (batch.length > 0 && (batch.length >= this.maxCount || total + n > this.maxBytes)) {
        kept.push(...this.order.slice(i));
        break;
      }
      batch.push(this.takeReport(key));
      total += n;
    }
    this.order = kept;
    return batch;
  }

  private takeReport(key: Key): Result {
    let r = this.reports.get(key)!;
    this.reports.delete(key);
    this.byReport.delete(key);
    const earlier = this.chunks.get(key);
    if (earlier && earlier.length > 0) {
      this.chunks.delete(key);
      r = withOutput(r, earlier);
    }
    this.inFlight.add(key);
    return r;
  }

  takeTroubledOutput(now: number): OutputBatch | null {
    for (const [key, chunks] of this.chunks) {
      if (this.reports.has(key) || !this.troubled.has(key) || !this.ready(key, now)) continue;
      this.chunks.delete(key);
      return new Map([[key, chunks]]);
    }
    return null;
  }

  takeTroubledReport(now: number): Result[] | null {
    for (let i = 0; i < this.order.length; i++) {
      const key = this.order[i]!;
      if (!this.troubled.has(key) || !this.ready(key, now)) continue;
      this.order.splice(i, 1);
      return [this.takeReport(key)];
    }
    return null;
  }

  delivered(keys: Iterable<Key>): void {
    for (const key of keys) this.troubled.delete(key);
  }

  /** One more coordinator error for key; true when it ran out of tries. */
  private fail(key: Key, now: number): boolean {
    let t = this.troubled.get(key);
    if (!t) {
      t = { failures: 0, notBefore: 0 };
      this.troubled.set(key, t);
    }
    t.failures++;
    if (t.failures >= this.tries) {
      this.troubled.delete(key);
      return true;
    }
    t.notBefore = now + Math.max(1, jittered(this.retryBaseMs, DEFAULT_BACKOFF_CAP_MS, t.failures - 1));
    return false;
  }

  /** Puts back a failed output batch; returns the leases that ran out of tries (their chunks dropped). */
  failOutput(batch: OutputBatch, now: number): Key[] {
    const given: Key[] = [];
    for (const key of batch.keys()) if (this.fail(key, now)) given.push(key);
    for (const key of given) batch.delete(key);
    this.restoreOutput(batch);
    return given;
  }

  /** Puts back a failed report batch; returns the leases that ran out of tries (in flight until discarded). */
  failReports(batch: Result[], now: number): Key[] {
    const given: Key[] = [];
    const kept: Result[] = [];
    for (const r of batch) {
      if (this.fail(r.task.key, now)) given.push(r.task.key);
      else kept.push(r);
    }
    this.restoreReports(kept);
    return given;
  }

  settleReports(batch: Result[]): void {
    for (const r of batch) this.inFlight.delete(r.task.key);
  }

  restoreOutput(batch: OutputBatch): void {
    for (const [key, chunks] of batch) this.chunks.set(key, [...chunks, ...(this.chunks.get(key) ?? [])]);
  }

  restoreReports(batch: Result[]): void {
    const keys: Key[] = [];
    for (let r of batch) {
      const key = r.task.key;
      this.inFlight.delete(key);
      const earlier = this.chunks.get(key);
      if (earlier && earlier.length > 0) {
        this.chunks.delete(key);
        r = withOutput(r, earlier);
      }
      if (!this.reports.has(key)) keys.push(key);
      this.reports.set(key, r);
    }
    this.order = [...keys, ...this.order];
  }

  /** restoreReports for the reports of a failed Lease: applied or not, nobody knows, so they go
   * by Report, which answers those already applied as stale. */
  restoreByReport(batch: Result[]): void {
    this.restoreReports(batch);
    for (const r of batch) this.byReport.add(r.task.key);
  }

  /** Forgets everything about these leases (stale or lost). */
  discard(keys: Iterable<Key>): void {
    const gone = new Set(keys);
    for (const key of gone) {
      this.chunks.delete(key);
      this.reports.delete(key);
      this.inFlight.delete(key);
      this.troubled.delete(key);
      this.byReport.delete(key);
    }
    this.order = this.order.filter((k) => !gone.has(k));
  }

  clear(): void {
    this.chunks.clear();
    this.reports.clear();
    this.inFlight.clear();
    this.troubled.clear();
    this.byReport.clear();
    this.order = [];
  }
}
