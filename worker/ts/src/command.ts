// Command tasks (function_name "@command"): a program spawned directly (not in a
// forked child), in its own process group, its stdout and stderr the run's output.
// Exit 0 is COMPLETED {"exit_code": 0}; anything else FAILED naming the exit code,
// with the last lines of stderr. docs/command-tasks.md has the rules.
import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants, realpathSync, statSync } from "node:fs";
import { basename, delimiter, dirname, isAbsolute, join, resolve } from "node:path";

import type { CommandSpec } from "./types";

export const STDERR_TAIL_LINES = 20;
const STDERR_TAIL_BYTES = 64 * 1024;

function isExecutableFile(path: string): boolean {
  try {
    if (!statSync(path).isFile()) return false;
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Makes executable absolute: a bare name is looked up in the worker's PATH, a relative path from cwd. */
export function lookup(executable: string, cwd: string, path: string = process.env["PATH"] ?? ""): string {
  if (!executable.includes("/")) {
    for (const dir of path.split(delimiter)) {
      if (dir === "") continue;
      const candidate = resolve(dir, executable);
      if (isExecutableFile(candidate)) return candidate;
    }
    throw new Error(`executable ${executable} not found in PATH`);
  }
  const full = resolve(!isAbsolute(executable) && cwd ? join(cwd, executable) : executable);
  if (!isExecutableFile(full)) throw new Error(`executable ${executable} is not an executable file`);
  return full;
}

/** The directory's symlinks resolved, the file name kept (busybox links stay distinct). */
function realDir(path: string): string {
  return join(realpathSync(dirname(path)), basename(path));
}

/** Which executables command tasks may run; an empty allow-list allows any. */
export class CommandPolicy {
  private readonly allowed = new Set<string>();

  /** Throws when an allow-list entry names no executable file (exit code 2). */
  constructor(allowList: string[]) {
    for (const name of allowList) {
      try {
        this.allowed.add(realDir(lookup(name, "")));
      } catch (err) {
        throw new Error(`--allow-executable ${name}: ${(err as Error).message}`);
      }
    }
  }

  /** The absolute path to run, or throws saying why the command may not run. */
  resolve(executable: string, cwd: string): string {
    if (!executable) throw new Error("the command has no executable");
    const path = lookup(executable, cwd);
    if (this.allowed.size === 0) return path;
    let real = "";
    try {
      real = realDir(path);
    } catch {
      /* not allowed */
    }
    if (!this.allowed.has(real)) {
      throw new Error(`executable ${executable} (${path}) is not in this worker's --allow-executable list`);
    }
    return path;
  }
}

/** Keeps the last bytes written to stderr, for the traceback. */
export class Tail {
  private data = Buffer.alloc(0);

  write(chunk: Buffer): void {
    this.data = Buffer.concat([this.data, chunk]);
    if (this.data.length > STDERR_TAIL_BYTES) this.data = this.data.subarray(this.data.length - STDERR_TAIL_BYTES);
  }

  lastLines(n: number): string {
    const text = this.data.toString("utf8").replace(/\n+$/, "");
    if (text === "") return "";
    return text.split("\n").slice(-n).join("\n") + "\n";
  }
}

/** How a process ended, e.g. "exit code 3" or "killed by signal SIGSEGV". */
export function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `killed by signal ${signal}` : `exit code ${code ?? -1}`;
}

export interface RunInfo {
  taskId: number;
  uuid: string;
  runId: number;
  attempt: number;
}

/** The environment of a command: the worker's minus its token, plus the task's and TASKGRID_* ids. */
export function commandEnv(base: NodeJS.ProcessEnv, spec: CommandSpec, info: RunInfo): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base };
  delete env["TASKGRID_TOKEN"];
  Object.assign(env, spec.env);
  env["TASKGRID_TASK_ID"] = String(info.taskId);
  env["TASKGRID_TASK_UUID"] = info.uuid;
  env["TASKGRID_RUN_ID"] = String(info.runId);
  env["TASKGRID_ATTEMPT"] = String(info.attempt);
  return env;
}

/** Spawns the command in its own process group (detached: its own session), output piped. */
export function spawnCommand(path: string, spec: CommandSpec, info: RunInfo): ChildProcess {
  return spawn(path, spec.args, {
    argv0: spec.executable,
    cwd: spec.cwd || undefined,
    env: commandEnv(process.env, spec, info),
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
}
