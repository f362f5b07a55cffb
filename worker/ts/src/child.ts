// The code inside a forked child: it loads the --tasks module once, then runs one
// handler at a time as the pool asks over IPC. Its stdout and stderr are pipes the
// pool reads (fd level: console.log, process.stdout.write and subprocesses alike).
// It leaves as soon as its IPC channel closes (the worker died), taking its process
// group with it. SIGTERM aborts the run's signal and ends the child once the handler
// settles; a handler that ignores both is ended by SIGKILL after the kill grace.
import { writeSync } from "node:fs";

import { type Handler, loadHandlers, type TaskContext } from "./handlers";
import type { DoneMessage, FromChild, RunMessage, ToChild } from "./protocol";
import { sentinelOf } from "./sentinel";

let controller: AbortController | null = null;
let current: RunMessage | null = null; // the run in progress
let crashed = false;
let terminating = false; // SIGTERM came: leave once the run in progress settles

function send(message: FromChild): void {
  if (process.send) process.send(message);
}

function leave(): void {
  try {
    process.kill(-process.pid, "SIGKILL"); // our group: the child and what its handler started
  } catch {
    process.exit(1);
  }
}

function writeAll(fd: number, data: Buffer): void {
  let off = 0;
  while (off < data.length) {
    try {
      off += writeSync(fd, data, off);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EAGAIN") continue;
      throw err;
    }
  }
}

/** Writes the sentinel after whatever the stream still queues; straight to fd if the stream is broken. */
function endStream(stream: NodeJS.WriteStream, fd: number, sentinel: Buffer): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed || !stream.writable) {
      writeAll(fd, sentinel);
      resolve();
      return;
    }
    stream.write(sentinel, () => resolve());
  });
}

function traceback(err: unknown): string {
  if (err instanceof Error) return err.stack ?? `${err.name}: ${err.message}`;
  try {
    return `thrown: ${typeof err === "string" ? err : JSON.stringify(err)}`;
  } catch {
    return `thrown: ${String(err)}`;
  }
}

function decode(text: string, empty: string, what: string, isList: boolean): unknown {
  const value: unknown = JSON.parse(text === "" ? empty : text);
  if (value === null) return isList ? [] : {};
  if (isList ? !Array.isArray(value) : typeof value !== "object" || Array.isArray(value)) {
    throw new TypeError(`the task's ${what} are not a JSON ${isList ? "list" : "object"}`);
  }
  return value;
}

async function run(handlers: Map<string, Handler>, msg: RunMessage): Promise<void> {
  if (crashed) return;
  current = msg;
  controller = new AbortController();
  const done: DoneMessage = { type: "done", token: msg.token, ok: false };
  try {
    const handler = handlers.get(msg.functionName);
    if (!handler) throw new ReferenceError(`function "${msg.functionName}" is not registered in this worker`);
    const args = decode(msg.args, "[]", "args", true) as unknown[];
    const vars = decode(msg.vars, "{}", "vars", false) as Record<string, unknown>;
    const ctx: TaskContext = {
      id: msg.id,
      uuid: msg.uuid,
      runId: msg.runId,
      attempt: msg.attempt,
      taskName: msg.taskName,
      signal: controller.signal,
    };
    const value = await handler(args, vars, ctx);
    let text: string | undefined;
    try {
      text = JSON.stringify(value);
    } catch (err) {
      throw new TypeError(`the result cannot be encoded as JSON: ${(err as Error).message}`);
    }
    done.ok = true;
    done.result = text ?? "null";
  } catch (err) {
    done.traceback = traceback(err);
  }
  controller = null;
  if (crashed) return; // crash() reported this run already
  if (terminating) process.exit(143); // stopped: the pool reports the run and replaces this child
  current = null;
  await finishRun(msg.token, done);
}

async function finishRun(token: string, done: DoneMessage): Promise<void> {
  // Through the streams, not the fds: what the handler wrote may still be queued in them.
  const sentinel = sentinelOf(token);
  await Promise.all([endStream(process.stdout, 1, sentinel), endStream(process.stderr, 2, sentinel)]);
  send(done);
}

/**
 * An error no handler caught (a throw in a timer, an unhandled rejection): the run in
 * progress fails with it, and the child leaves, its state being unknown; the pool replaces it.
 */
function crash(err: unknown): void {
  if (crashed) return;
  crashed = true;
  const msg = current;
  const why = `uncaught in the task's child process: ${traceback(err)}`;
  if (!msg) {
    process.stderr.write(why + "\n");
    process.exit(70);
  }
  const done: DoneMessage = { type: "done", token: msg.token, ok: false, traceback: why, exiting: true };
  void finishRun(msg.token, done).then(() => setTimeout(() => process.exit(70), 100));
}

async function main(): Promise<void> {
  process.on("disconnect", leave);
  process.on("uncaughtException", crash);
  process.on("unhandledRejection", crash);
  // A stop or a timeout: abort the run's signal and leave once its handler settles, so a
  // handler that honours the signal may clean up (SIGKILL comes after --kill-grace anyway).
  process.on("SIGTERM", () => {
    terminating = true;
    controller?.abort(new Error("the run was stopped"));
    if (!current) process.exit(143);
  });
  const tasks = process.argv[2];
  const handlers = tasks ? await loadHandlers(tasks) : new Map<string, Handler>();
  let busy: Promise<void> = Promise.resolve();
  process.on("message", (msg: ToChild) => {
    if (msg.type === "abort") {
      controller?.abort(new Error("the run was stopped"));
    } else if (msg.type === "run") {
      busy = busy.then(() => run(handlers, msg));
    }
  });
  send({ type: "ready" });
}

void main();
