// What a --tasks module offers: its handlers by name, and what a handler is given.
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

/** What a handler learns about its run (web2py's W2P_TASK), and its cancellation. */
export interface TaskContext {
  id: number; // the task id
  uuid: string;
  runId: number; // 0 when the task discards its results
  attempt: number; // the lease attempt (this run's fencing token)
  taskName: string;
  /** Aborted when the run is stopped or times out (just before SIGTERM). */
  signal: AbortSignal;
}

/** A task function: args are the task's JSON args, vars its JSON vars; the value is JSON-encoded. */
export type Handler = (args: unknown[], vars: Record<string, unknown>, ctx: TaskContext) => unknown;

/**
 * The handlers of a loaded module: the functions of its `tasks` object when it exports one,
 * else its exported functions (and those of a `default` object: a CommonJS module imported
 * as ESM, or an ES module's default export).
 */
export function handlersOf(mod: unknown): Map<string, Handler> {
  const found = new Map<string, Handler>();
  const add = (obj: unknown): void => {
    if (obj === null || (typeof obj !== "object" && typeof obj !== "function")) return;
    for (const [name, value] of Object.entries(obj as Record<string, unknown>)) {
      if (typeof value === "function" && name !== "default" && name !== "tasks") found.set(name, value as Handler);
    }
  };
  const m = (mod ?? {}) as Record<string, unknown>;
  const d = (typeof m["default"] === "object" && m["default"] !== null ? m["default"] : {}) as Record<string, unknown>;
  const tasks = m["tasks"] ?? d["tasks"];
  if (typeof tasks === "object" && tasks !== null) {
    add(tasks);
    return found;
  }
  add(d);
  add(m);
  return found;
}

/** Loads the --tasks module (CommonJS or ES module, by import()) and lists its handlers. */
export async function loadHandlers(path: string): Promise<Map<string, Handler>> {
  const mod: unknown = await import(pathToFileURL(resolve(path)).href);
  return handlersOf(mod);
}
