// The runs: up to `concurrency` at once, one slot each. Every slot owns a long-lived
// forked child that runs its function tasks one at a time; a command task runs as
// its own process instead (command.ts) while the slot's child waits. Each child and
// each command is in its own process group (detached: a new session, Node having no
// setpgid), so a timeout or a stop sends SIGTERM to the whole group, then SIGKILL
// after the kill grace. A child that was stopped is reaped and replaced before its
// slot counts as free again: a retry never overlaps a killed attempt, and the
// running processes never exceed the slots.
import { type ChildProcess, fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";

import { OutputBuffer, type Stream } from "./capture";
import { type CommandPolicy, describeExit, spawnCommand, STDERR_TAIL_LINES, Tail } from "./command";
import { Level, type Logger } from "./log";
import type { DoneMessage, FromChild, RunMessage } from "./protocol";
import { SentinelScanner } from "./sentinel";
import { COMMAND_FUNCTION, type Key, Outcome, type Result, type Task } from "./types";

/** How long the pipes may stay open once a process group is gone (a daemon may hold them). */
export const DRAIN_TIMEOUT_MS = 2000;
/** Delay before replacing a child that died while idle, growing with repeated failures. */
const RESPAWN_BASE_MS = 100;

export interface PoolConfig {
  tasksPath: string; // "" : a command-only worker (the children load nothing)
  concurrency: number;
  killGraceMs: number;
  commands: CommandPolicy | null; // null: command tasks fail
  log: Logger;
}

/** A run in progress, as the reporter sees it. */
export interface Active {
  task: Task;
  output: OutputBuffer;
  started: number;
}

interface Run extends Active {
  slot: Slot;
  out: Stream;
  err: Stream;
  reason: Outcome | 0; // why it is being ended early (0: it is not)
  timeout?: NodeJS.Timeout;
  killTimer?: NodeJS.Timeout;
  token?: string; // function runs: the sentinel token
  done?: DoneMessage;
  proc?: ChildProcess; // command runs
  tail?: Tail;
  ended: boolean;
}

interface Slot {
  index: number;
  child: ChildProcess | null;
  ready: boolean; // may take a run now
  started: boolean; // the current child said ready once (a later death is not a start failure)
  run: Run | null;
  scanners: [SentinelScanner, SentinelScanner];
  failures: number; // children that died before they were ready, in a row
}

function killGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (!pid) return;
  try {
    process.kill(-pid, signal);
  } catch {
    /* the group is gone */
  }
}

/** Resolves once every stream closed, or after ms (then destroys them). */
function drained(streams: (NodeJS.ReadableStream | null)[], ms: number): Promise<void> {
  const open = streams.filter((s): s is NodeJS.ReadableStream & { destroy(): void; closed?: boolean } => {
    return s !== null && !(s as { closed?: boolean }).closed;
  });
  if (open.length === 0) return Promise.resolve();
  return new Promise((resolve) => {
    let left = open.length;
    const timer = setTimeout(() => {
      for (const s of open) s.destroy();
      resolve();
    }, ms);
    for (const s of open) {
      s.once("close", () => {
        if (--left === 0) {
          clearTimeout(timer);
          resolve();
        }
      });
    }
  });
}

function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env["TASKGRID_TOKEN"]; // the worker's secret is not the task's
  return env;
}

export class Pool {
  private readonly slots: Slot[] = [];
  private readonly runs = new Map<Key, Run>();
  private closing = false;
  private readonly childScript = join(__dirname, "child.js");
  private readonly log: Logger;

  /** onFinish gets the end of every run, once; onFree says a slot may take a run. */
  constructor(
    private readonly cfg: PoolConfig,
    private readonly onFinish: (result: Result) => void,
    private readonly onFree: () => void,
  ) {
    this.log = cfg.log;
    for (let i = 0; i < Math.max(1, cfg.concurrency); i++) {
      const slot: Slot = {
        index: i,
        child: null,
        ready: false,
        started: false,
        run: null,
        scanners: [new SentinelScanner(), new SentinelScanner()],
        failures: 0,
      };
      this.slots.push(slot);
      this.spawnChild(slot);
    }
  }

  // ---- children ---------------------------------------------------------------

  private spawnChild(slot: Slot): void {
    if (this.closing) return;
    const child = fork(this.childScript, this.cfg.tasksPath ? [this.cfg.tasksPath] : [], {
      detached: true,
      stdio: ["ignore", "pipe", "pipe", "ipc"],
      env: childEnv(),
      execArgv: [],
      serialization: "json",
    });
    slot.child = child;
    slot.ready = false;
    slot.started = false;
    child.on("message", (msg: FromChild) => this.onMessage(slot, child, msg));
    child.stdout?.on("data", (chunk: Buffer) => this.onData(slot, child, 0, chunk));
    child.stderr?.on("data", (chunk: Buffer) => this.onData(slot, child, 1, chunk));
    child.on("error", (err) => this.log.warn("child process error", { slot: slot.index, error: err.message }));
    child.on("exit", (code, signal) => void this.onExit(slot, child, code, signal));
    this.log.debug("child started", { slot: slot.index, pid: child.pid });
  }

  private onMessage(slot: Slot, child: ChildProcess, msg: FromChild): void {
    if (slot.child !== child) return;
    if (msg.type === "ready") {
      slot.ready = true;
      slot.started = true;
      slot.failures = 0;
      if (!slot.run) this.onFree();
      return;
    }
    const run = slot.run;
    if (msg.type === "done" && run && run.token === msg.token) {
      run.done = msg;
      if (msg.exiting) slot.ready = false; // replaced once it is gone, before its next run
      this.maybeComplete(run);
    }
  }

  private onData(slot: Slot, child: ChildProcess, which: 0 | 1, chunk: Buffer): void {
    if (slot.child !== child) return;
    const run = slot.run;
    if (!run || run.proc || !run.token) {
      if (this.log.enabled(Level.Debug)) this.log.debug("child output outside a run", { slot: slot.index, bytes: chunk.length });
      return;
    }
    const scanner = slot.scanners[which];
    const mine = scanner.push(chunk);
    if (mine.length > 0) (which === 0 ? run.out : run.err).write(mine);
    if (scanner.seen) this.maybeComplete(run);
  }

  /** A function run is over once its done message and both sentinels are in (unless it is being stopped). */
  private maybeComplete(run: Run): void {
    const slot = run.slot;
    if (run.reason || run.ended || !run.done || !slot.scanners[0].seen || !slot.scanners[1].seen) return;
    const done = run.done;
    this.finish(run, done.ok ? Outcome.Completed : Outcome.Failed, done.result, done.traceback ?? "");
  }

  private async onExit(slot: Slot, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    if (slot.child !== child) return;
    killGroup(child.pid, "SIGKILL"); // whatever the handler left in the group
    const started = slot.started;
    slot.ready = false;
    const run = slot.run && !slot.run.proc ? slot.run : null;
    if (run) {
      await drained([child.stdout, child.stderr], DRAIN_TIMEOUT_MS);
      for (const scanner of slot.scanners) {
        const rest = scanner.end();
        if (rest.length > 0) run.out.write(rest);
      }
      if (!run.ended) {
        if (run.reason) {
          this.finish(run, run.reason, undefined, "");
        } else if (run.done && run.done.ok === false) {
          this.finish(run, Outcome.Failed, undefined, run.done.traceback ?? "");
        } else if (run.done) {
          this.finish(run, Outcome.Completed, run.done.result, "");
        } else {
          this.finish(run, Outcome.Failed, undefined, `the task's child process died (${describeExit(code, signal)})`);
        }
      }
    } else {
      this.log.debug("child exited", { slot: slot.index, how: describeExit(code, signal) });
    }
    slot.child = null;
    if (this.closing) return;
    if (!started) slot.failures++;
    if (slot.failures > 0) {
      this.log.error("a child process died before it was ready", { slot: slot.index, how: describeExit(code, signal) });
    }
    const delay = slot.failures === 0 ? 0 : Math.min(5000, RESPAWN_BASE_MS * 2 ** slot.failures);
    setTimeout(() => {
      if (!this.closing && slot.child === null) this.spawnChild(slot);
    }, delay);
  }

  // ---- runs ---------------------------------------------------------------------

  /** Starts task in a free slot now; throws when there is none (or the lease runs already). */
  submit(task: Task): void {
    if (this.closing) throw new Error("the pool is closing");
    if (this.runs.has(task.key)) throw new Error(`lease ${task.key} is already running`);
    const slot = this.slots.find((s) => s.ready && !s.run);
    if (!slot) throw new Error("no free slot");
    const output = new OutputBuffer();
    const run: Run = {
      task,
      output,
      out: output.stream(),
      err: output.stream(),
      started: Date.now(),
      slot,
      reason: 0,
      ended: false,
    };
    slot.run = run;
    this.runs.set(task.key, run);
    if (task.timeoutMs > 0) {
      run.timeout = setTimeout(() => {
        if (this.beginStop(run, Outcome.Timeout)) this.log.debug("task timed out", { task: task.taskId, attempt: task.attempt });
      }, task.timeoutMs);
    }
    if (task.command || task.functionName === COMMAND_FUNCTION) {
      this.startCommand(run);
    } else {
      this.startFunction(run);
    }
  }

  private startFunction(run: Run): void {
    const slot = run.slot;
    const token = randomBytes(12).toString("hex");
    run.token = token;
    for (const scanner of slot.scanners) scanner.expect(token);
    const t = run.task;
    const msg: RunMessage = {
      type: "run",
      token,
      functionName: t.functionName,
      args: t.args,
      vars: t.vars,
      id: t.taskId,
      uuid: t.uuid,
      runId: t.runId,
      attempt: t.attempt,
      taskName: t.taskName,
    };
    slot.child?.send(msg, (err) => {
      if (err && !run.ended) {
        this.log.warn("cannot hand a run to its child", { task: t.taskId, error: err.message });
        killGroup(slot.child?.pid, "SIGKILL"); // onExit ends the run FAILED and replaces the child
      }
    });
  }

  private startCommand(run: Run): void {
    const spec = run.task.command;
    if (!this.cfg.commands) {
      return this.finishSoon(run, "command tasks are not allowed on this worker (start it with --allow-commands)");
    }
    if (!spec) return this.finishSoon(run, "a command task without a command");
    let path: string;
    try {
      path = this.cfg.commands.resolve(spec.executable, spec.cwd);
    } catch (err) {
      return this.finishSoon(run, (err as Error).message);
    }
    const t = run.task;
    let proc: ChildProcess;
    try {
      proc = spawnCommand(path, spec, { taskId: t.taskId, uuid: t.uuid, runId: t.runId, attempt: t.attempt });
    } catch (err) {
      return this.finishSoon(run, `cannot start ${spec.executable}: ${(err as Error).message}`);
    }
    run.proc = proc;
    run.tail = new Tail();
    proc.stdout?.on("data", (chunk: Buffer) => run.out.write(chunk));
    proc.stderr?.on("data", (chunk: Buffer) => {
      run.err.write(chunk);
      run.tail?.write(chunk);
    });
    let spawned = false;
    proc.on("spawn", () => (spawned = true));
    proc.on("error", (err) => {
      if (!spawned && !run.ended) this.finish(run, Outcome.Failed, undefined, `cannot start ${spec.executable}: ${err.message}`);
    });
    proc.on("exit", (code, signal) => void this.commandExited(run, proc, code, signal));
  }

  private async commandExited(run: Run, proc: ChildProcess, code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    if (run.ended) return;
    if (!run.reason) killGroup(proc.pid, "SIGKILL"); // what it left running in its group
    await drained([proc.stdout, proc.stderr], run.reason ? this.cfg.killGraceMs + DRAIN_TIMEOUT_MS : DRAIN_TIMEOUT_MS);
    killGroup(proc.pid, "SIGKILL");
    if (run.ended) return;
    if (run.reason) return this.finish(run, run.reason, undefined, "");
    if (code === 0) return this.finish(run, Outcome.Completed, '{"exit_code": 0}', "");
    let trace = describeExit(code, signal);
    const lines = run.tail?.lastLines(STDERR_TAIL_LINES) ?? "";
    if (lines) trace += "\nlast lines of stderr:\n" + lines;
    this.finish(run, Outcome.Failed, undefined, trace);
  }

  /** Fails a run that could not start, on the next turn (submit never calls back into the agent). */
  private finishSoon(run: Run, traceback: string): void {
    setImmediate(() => {
      if (!run.ended) this.finish(run, run.reason || Outcome.Failed, undefined, traceback);
    });
  }

  private finish(run: Run, outcome: Outcome, result: string | undefined, traceback: string): void {
    if (run.ended) return;
    run.ended = true;
    if (run.timeout) clearTimeout(run.timeout);
    if (run.killTimer) clearTimeout(run.killTimer);
    if (run.reason) {
      outcome = run.reason; // stopped or timed out: whatever it returned meanwhile
      result = undefined;
      traceback = "";
    }
    const slot = run.slot;
    if (slot.run === run) slot.run = null;
    this.runs.delete(run.task.key);
    run.output.close();
    const end: Result = { task: run.task, outcome, traceback, output: run.output.take(true), started: run.started };
    if (outcome === Outcome.Completed) end.result = result ?? "null";
    this.onFinish(end);
    if (slot.ready && !slot.run) this.onFree();
  }

  /** Stops the run of key with outcome; true when this call started the stop. */
  stop(key: Key, outcome: Outcome): boolean {
    const run = this.runs.get(key);
    return run !== undefined && this.beginStop(run, outcome);
  }

  /** Stops every run; returns their keys. */
  stopAll(outcome: Outcome): Key[] {
    const keys = [...this.runs.keys()];
    for (const run of this.runs.values()) this.beginStop(run, outcome);
    return keys;
  }

  private beginStop(run: Run, outcome: Outcome): boolean {
    if (run.reason || run.ended) return false;
    run.reason = outcome;
    const t = run.task;
    this.log.debug("stopping task", { task: t.taskId, attempt: t.attempt, reason: Outcome[outcome] });
    let pid: number | undefined;
    if (run.proc) {
      pid = run.proc.pid;
      if (pid === undefined) {
        this.finishSoon(run, "");
        return true;
      }
    } else {
      const child = run.slot.child;
      pid = child?.pid;
      if (!child || pid === undefined) {
        this.finishSoon(run, "");
        return true;
      }
      run.slot.ready = false; // this child is replaced once it is gone
      try {
        child.send({ type: "abort" });
      } catch {
        /* the channel is gone: the signals still reach it */
      }
    }
    const grace = this.cfg.killGraceMs;
    killGroup(pid, grace > 0 ? "SIGTERM" : "SIGKILL");
    if (grace > 0) run.killTimer = setTimeout(() => killGroup(pid, "SIGKILL"), grace);
    return true;
  }

  /** How many tasks can be submitted now. */
  freeSlots(): number {
    if (this.closing) return 0;
    return this.slots.filter((s) => s.ready && !s.run).length;
  }

  activeKeys(): Key[] {
    return [...this.runs.keys()];
  }

  active(): Active[] {
    return [...this.runs.values()].map((r) => ({ task: r.task, output: r.output, started: r.started }));
  }

  /** The processes of the children and running commands (for the heartbeat's RSS). */
  childPids(): number[] {
    const pids: number[] = [];
    for (const slot of this.slots) {
      if (slot.child?.pid) pids.push(slot.child.pid);
      if (slot.run?.proc?.pid) pids.push(slot.run.proc.pid);
    }
    return pids;
  }

  /** Refuses new runs, stops every run (STOPPED), waits up to ms for them, then kills the children. */
  async close(ms: number): Promise<boolean> {
    this.closing = true;
    this.stopAll(Outcome.Stopped);
    const deadline = Date.now() + ms;
    while (this.runs.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const slot of this.slots) {
      const child = slot.child;
      if (!child) continue;
      child.removeAllListeners("exit");
      killGroup(child.pid, "SIGKILL");
      try {
        child.disconnect();
      } catch {
        /* already gone */
      }
      child.stdout?.destroy();
      child.stderr?.destroy();
    }
    return this.runs.size === 0;
  }
}
