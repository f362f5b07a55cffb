// Plain data shared by the pool, the outbox and the agent: no gRPC, no processes.

/** The function_name of command tasks. */
export const COMMAND_FUNCTION = "@command";

/** One lease, and so one run: "taskId:attempt" (a string, so it can key a Map). */
export type Key = string;

export function keyOf(taskId: number, attempt: number): Key {
  return `${taskId}:${attempt}`;
}

export function splitKey(key: Key): { taskId: number; attempt: number } {
  const [task, attempt] = key.split(":");
  return { taskId: Number(task), attempt: Number(attempt) };
}

/** Sorts keys by task, then attempt (heartbeats list them in a stable order). */
export function compareKeys(x: Key, y: Key): number {
  const a = splitKey(x);
  const b = splitKey(y);
  return a.taskId - b.taskId || a.attempt - b.attempt;
}

/** How a run ended (the worker's side of RunStatus). */
export enum Outcome {
  Completed = 1,
  Failed,
  Timeout,
  Stopped,
}

export interface CommandSpec {
  executable: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
}

/** A leased task to run. */
export interface Task {
  key: Key;
  taskId: number;
  attempt: number;
  runId: number;
  uuid: string;
  functionName: string;
  taskName: string;
  args: string; // JSON text of a list
  vars: string; // JSON text of an object
  timeoutMs: number; // 0: no limit
  syncOutputMs: number; // 0: the default cadence
  command?: CommandSpec;
}

/** One numbered slice of a run's output, as sent in an OutputChunk. */
export interface Chunk {
  seq: number;
  data: string;
  clear: boolean;
}

/** The end of one run. */
export interface Result {
  task: Task;
  outcome: Outcome;
  result?: string; // JSON text (COMPLETED only)
  traceback: string;
  output: Chunk[]; // chunks not taken live; their seq continues the live ones
  started: number; // Date.now() at submit
}
