// The TypeScript twins of tests/conformance/handlers.py (and worker/go/conformance):
// handlers of the same names and behaviour, so one scenario set runs against every
// worker. ts_only exists only here, to test routing between languages; stubborn
// ignores cancellation and SIGTERM, to test that a stop ends in SIGKILL.
//
// It doubles as an example --tasks module: each handler gets the task's args
// (positional), its vars (by name) and a TaskContext, and may be async.
import { appendFileSync } from "node:fs";

import type { TaskContext } from "../src/handlers";

type Args = unknown[];
type Vars = Record<string, unknown>;

/** Positional argument i, else vars[name], else fallback (how Python binds pargs and pvars). */
function param(args: Args, vars: Vars, i: number, name: string, fallback?: unknown): unknown {
  if (i < args.length) return args[i];
  if (name in vars) return vars[name];
  return fallback;
}

function number(value: unknown, name: string): number {
  if (typeof value !== "number") throw new TypeError(`${name} must be a number, not ${typeof value}`);
  return value;
}

/** Sleeps ms unless signal aborts first (then rejects with its reason). */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, Math.max(0, ms));
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** a + b for numbers, strings or lists, like Python's +. */
export function add(args: Args, vars: Vars): unknown {
  const a = param(args, vars, 0, "a");
  const b = param(args, vars, 1, "b");
  if (typeof a === "number" && typeof b === "number") return a + b;
  if (typeof a === "string" && typeof b === "string") return a + b;
  if (Array.isArray(a) && Array.isArray(b)) return [...a, ...b];
  throw new TypeError(`cannot add ${typeof a} and ${typeof b}`);
}

/** [args, vars]. */
export function echo(args: Args, vars: Vars): unknown {
  return [args, vars];
}

/** Throws with msg (default "boom"). */
export function fail(args: Args, vars: Vars): never {
  throw new Error(String(param(args, vars, 0, "msg", "boom")));
}

/** Sleeps (until cancelled), then returns the seconds slept. */
export async function sleep_for(args: Args, vars: Vars, ctx: TaskContext): Promise<number> {
  const seconds = number(param(args, vars, 0, "seconds"), "seconds");
  await pause(seconds * 1000, ctx.signal);
  return seconds;
}

/** Prints "line i" n times, delay seconds apart; returns n. */
export async function print_lines(args: Args, vars: Vars, ctx: TaskContext): Promise<number> {
  const n = number(param(args, vars, 0, "n"), "n");
  const delay = number(param(args, vars, 1, "delay", 0), "delay");
  for (let i = 0; i < n; i++) {
    console.log(`line ${i}`);
    if (delay) await pause(delay * 1000, ctx.signal);
  }
  return n;
}

/** Prints 50%, then !clear!100%: the output ends as "100%". */
export function progress(): number {
  console.log("50%");
  console.log("!clear!100%");
  return 1;
}

/** Several markers: the output ends as "d". */
export function clear_many(): null {
  console.log("a");
  console.log("!clear!b");
  console.log("c!clear!d");
  return null;
}

/** [task id, uuid, run id] as the worker tells the handler. */
export function whoami(_args: Args, _vars: Vars, ctx: TaskContext): unknown {
  return [ctx.id, ctx.uuid, ctx.runId];
}

/** Writes text to stderr (captured with stdout). */
export function write_stderr(args: Args, vars: Vars): null {
  process.stderr.write(String(param(args, vars, 0, "text", "")));
  return null;
}

/** Offered by the TypeScript worker alone. */
export function ts_only(): string {
  return "ts";
}

/**
 * Ignores cancellation and SIGTERM for `seconds`, appending "PID start T" then "PID tick T"
 * every 50 ms to path: only SIGKILL ends it early, and the file shows when it did.
 */
export async function stubborn(args: Args, vars: Vars): Promise<number> {
  const path = String(param(args, vars, 0, "path"));
  const seconds = number(param(args, vars, 1, "seconds"), "seconds");
  const ignore = (): void => {};
  process.on("SIGTERM", ignore);
  try {
    appendFileSync(path, `${process.pid} start ${Date.now() / 1000}\n`);
    const end = Date.now() + seconds * 1000;
    while (Date.now() < end) {
      await pause(Math.min(50, end - Date.now()));
      appendFileSync(path, `${process.pid} tick ${Date.now() / 1000}\n`);
    }
  } finally {
    process.off("SIGTERM", ignore);
  }
  return seconds;
}
