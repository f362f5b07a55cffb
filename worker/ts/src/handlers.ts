// What a --tasks module offers: its handlers by name, and what a handler is given.

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
 * else its exported functions (a `default` object's functions too).
 */
export function handlersOf(mod: unknown): Map<string, Handler> {
  const found = new Map<string, Handler>();
  const add = (obj: unknown): void => {
    if (obj === null || (typeof obj !== "object" && typeof obj !== "function")) return;
    for (const [name, value] of Object.entries(obj as Record<string, unknown>)) {
      if (typeof value === "function" && name !== "default" && name !== "tasks") found.set(name, value as Handler);
    }
  };
  const m = mod as Record<string, unknown> | null;
  if (m && typeof m["tasks"] === "object" && m["tasks"] !== null) {
    add(m["tasks"]);
    return found;
  }
  if (m && typeof m["default"] === "object") add(m["default"]);
  add(m);
  return found;
}

/** Loads the --tasks module (CommonJS require; the path is made absolute) and lists its handlers. */
export function loadHandlers(path: string): Map<string, Handler> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod: unknown = require(require("node:path").resolve(path));
  return handlersOf(mod);
}
