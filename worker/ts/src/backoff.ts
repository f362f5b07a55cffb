// Retry delays for calls to a coordinator that is away. Each loop keeps its own
// Backoff, so a failing heartbeat does not slow the reporter; jitter keeps many
// workers from hammering a coordinator that just came back all at once.

export const DEFAULT_BACKOFF_BASE_MS = 100;
export const DEFAULT_BACKOFF_CAP_MS = 5000;

/** Coordinator errors (INTERNAL, UNKNOWN): calls per lease in all, and their spacing. */
export const DEFAULT_SERVER_ERROR_TRIES = 5;
export const DEFAULT_SERVER_ERROR_BACKOFF_MS = 200;

/** base<<n capped at limit, times a random factor in [0.5, 1). */
export function jittered(baseMs: number, capMs: number, n: number, random: () => number = Math.random): number {
  const delay = n < 30 ? Math.min(capMs, baseMs * 2 ** n) : capMs;
  return delay * (0.5 + random() / 2);
}

/** Yields base, 2*base, 4*base... up to the cap, each jittered. */
export class Backoff {
  private failures = 0;

  constructor(
    readonly baseMs: number = DEFAULT_BACKOFF_BASE_MS,
    readonly capMs: number = DEFAULT_BACKOFF_CAP_MS,
    private readonly random: () => number = Math.random,
  ) {}

  /** Counts one more failure and returns how long to wait before retrying. */
  next(): number {
    const delay = jittered(this.baseMs, this.capMs, this.failures, this.random);
    this.failures++;
    return delay;
  }

  /** Forgets the failures after a success. */
  reset(): void {
    this.failures = 0;
  }
}
