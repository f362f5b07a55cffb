// Attributing a child's output to its runs. A child writes the run's sentinel to
// fd 1 and fd 2 once the run is over; the parent treats a stream's bytes before the
// sentinel as the run's, and the run's output as complete once both streams showed
// it (and the IPC "done" came). IPC and pipes are not ordered with each other, so
// neither is trusted alone. The sentinel may be split across reads.

export function sentinelOf(token: string): Buffer {
  return Buffer.from(`\x1e\x1ftaskgrid-end-${token}\x1f\x1e`, "latin1");
}

/** Length of the longest suffix of data that is a proper prefix of needle. */
export function partialSuffix(data: Buffer, needle: Buffer): number {
  for (let n = Math.min(needle.length - 1, data.length); n > 0; n--) {
    if (data.subarray(data.length - n).equals(needle.subarray(0, n))) return n;
  }
  return 0;
}

/** Splits one stream at the sentinel of the run in progress. */
export class SentinelScanner {
  private held: Buffer = Buffer.alloc(0);
  private needle: Buffer | null = null;
  seen = false;

  /** Starts looking for a new run's sentinel. */
  expect(token: string): void {
    this.needle = sentinelOf(token);
    this.held = Buffer.alloc(0);
    this.seen = false;
  }

  /** Returns the bytes that belong to the run (none before expect or after its sentinel). */
  push(chunk: Buffer): Buffer {
    if (!this.needle || this.seen) return Buffer.alloc(0);
    const data = this.held.length ? Buffer.concat([this.held, chunk]) : chunk;
    const at = data.indexOf(this.needle);
    if (at >= 0) {
      this.seen = true;
      this.held = Buffer.alloc(0);
      return data.subarray(0, at);
    }
    const keep = partialSuffix(data, this.needle);
    this.held = Buffer.from(data.subarray(data.length - keep));
    return data.subarray(0, data.length - keep);
  }

  /** The stream ended without the sentinel: whatever was held back is the run's. */
  end(): Buffer {
    const rest = this.held;
    this.held = Buffer.alloc(0);
    this.needle = null;
    return rest;
  }
}
