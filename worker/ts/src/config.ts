// The worker's flags: the Go worker's names and defaults, parsed with util.parseArgs.
// A flag left out may be given as TASKGRID_<FLAG> (dashes as underscores); the command
// line wins over the environment. --config, --metrics-listen and --tracing are not offered.
import { hostname } from "node:os";
import { parseArgs } from "node:util";

import { parseLevel } from "./log";

export const DEFAULT_COORDINATOR = "127.0.0.1:50051";
export const DEFAULT_GROUP = "main";
export const ENV_PREFIX = "TASKGRID_";

export interface Options {
  tasks: string;
  coordinator: string;
  groups: string[];
  name: string;
  heartbeat: number; // seconds
  maxEmptyRuns: number;
  concurrency: number;
  killGrace: number; // seconds
  logLevel: string;
  logFormat: "text" | "json";
  allowCommands: boolean;
  executables: string[];
  token: string;
  tls: boolean;
  tlsCA: string;
  tlsCert: string;
  tlsKey: string;
  tlsServerName: string;
  insecure: boolean;
  help: boolean;
}

/** A usage error: exit code 2 with this message. */
export class UsageError extends Error {}

type Spec = { type: "string" | "boolean"; multiple?: boolean; help: string; default?: string };

export const FLAGS: Record<string, Spec> = {
  tasks: { type: "string", help: "a .js module exporting the task handlers (required unless commands are allowed)" },
  coordinator: {
    type: "string",
    default: DEFAULT_COORDINATOR,
    help: "coordinator address (HOST:PORT), or several separated by commas, failed over in order",
  },
  group: { type: "string", multiple: true, help: "group to take tasks from; repeatable (default main)" },
  name: { type: "string", help: "unique worker name (default hostname#pid)" },
  heartbeat: { type: "string", default: "3", help: "SECONDS between heartbeats" },
  "max-empty-runs": { type: "string", default: "0", help: "exit after N consecutive empty lease calls while idle (0: never)" },
  concurrency: { type: "string", default: "1", help: "tasks run at once (N), one child process each" },
  "kill-grace": { type: "string", default: "5", help: "SECONDS between SIGTERM and SIGKILL on timeout or stop" },
  "log-level": { type: "string", default: "INFO", help: "DEBUG, INFO, WARNING or ERROR" },
  "log-format": { type: "string", default: "text", help: "log lines on stderr: text, or json" },
  "allow-commands": { type: "boolean", help: "run command tasks: any program, as this worker's user" },
  "allow-executable": {
    type: "string",
    multiple: true,
    help: "run command tasks of this program only (a PATH, or a name looked up in PATH); repeatable; implies --allow-commands",
  },
  token: { type: "string", help: "bearer TOKEN of role worker (default $TASKGRID_TOKEN)" },
  tls: { type: "boolean", help: "use TLS, trusting the system's root CAs (implied by --tls-*)" },
  "tls-ca": { type: "string", help: "PEM CA bundle that signed the coordinator (default $TASKGRID_TLS_CA)" },
  "tls-cert": { type: "string", help: "PEM client certificate for mTLS (default $TASKGRID_TLS_CERT)" },
  "tls-key": { type: "string", help: "PEM private key of --tls-cert (default $TASKGRID_TLS_KEY)" },
  "tls-server-name": { type: "string", help: "NAME to check the coordinator's certificate against (implies --tls)" },
  insecure: { type: "boolean", help: "allow sending the token in plain text to another machine" },
  help: { type: "boolean", help: "show this help" },
};

/** TASKGRID_<FLAG>: the environment variable of a flag. */
export function envName(flag: string): string {
  return ENV_PREFIX + flag.toUpperCase().replaceAll("-", "_");
}

export function usage(): string {
  const lines = [
    "Usage: taskgrid-worker-ts [flags] (every flag can also be set by TASKGRID_<FLAG>, e.g. TASKGRID_MAX_EMPTY_RUNS)",
  ];
  for (const [name, spec] of Object.entries(FLAGS)) {
    const def = spec.default !== undefined ? ` (default ${spec.default})` : "";
    lines.push(`  --${name}${spec.type === "string" ? " VALUE" : ""}\n      ${spec.help}${def}`);
  }
  return lines.join("\n") + "\n";
}

function number(flag: string, text: string, integer: boolean): number {
  const value = Number(text.trim());
  if (text.trim() === "" || !Number.isFinite(value) || (integer && !Number.isInteger(value))) {
    throw new UsageError(`invalid value ${JSON.stringify(text)} for flag --${flag}: want ${integer ? "an integer" : "a number"}`);
  }
  return value;
}

function envBool(flag: string, text: string): boolean {
  const t = text.trim().toLowerCase();
  if (["1", "true", "yes", "on"].includes(t)) return true;
  if (["0", "false", "no", "off", ""].includes(t)) return false;
  throw new UsageError(`${envName(flag)}: invalid boolean ${JSON.stringify(text)}`);
}

/** Parses argv (without node and the script), then the environment; throws UsageError. */
export function parse(argv: string[], env: NodeJS.ProcessEnv = process.env): Options {
  const options: Record<string, { type: "string" | "boolean"; multiple?: boolean }> = {};
  for (const [name, spec] of Object.entries(FLAGS)) {
    options[name] = spec.multiple ? { type: spec.type, multiple: true } : { type: spec.type };
  }
  let values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args: argv, options, strict: true, allowPositionals: true }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (positionals.length > 0) throw new UsageError(`unexpected arguments: ${positionals.join(" ")}`);
  const str = (flag: string): string => {
    const v = values[flag];
    if (typeof v === "string") return v;
    const e = env[envName(flag)];
    if (e !== undefined && e !== "") return e;
    return FLAGS[flag]!.default ?? "";
  };
  const list = (flag: string): string[] => {
    const v = values[flag];
    if (Array.isArray(v)) return v.map(String);
    const e = env[envName(flag)];
    return e ? e.split(",").map((s) => s.trim()).filter((s) => s !== "") : [];
  };
  const bool = (flag: string): boolean => {
    const v = values[flag];
    if (typeof v === "boolean") return v;
    const e = env[envName(flag)];
    return e !== undefined ? envBool(flag, e) : false;
  };
  const o: Options = {
    tasks: str("tasks"),
    coordinator: str("coordinator"),
    groups: list("group"),
    name: str("name"),
    heartbeat: number("heartbeat", str("heartbeat"), false),
    maxEmptyRuns: number("max-empty-runs", str("max-empty-runs"), true),
    concurrency: number("concurrency", str("concurrency"), true),
    killGrace: number("kill-grace", str("kill-grace"), false),
    logLevel: str("log-level"),
    logFormat: str("log-format") as "text" | "json",
    allowCommands: bool("allow-commands"),
    executables: list("allow-executable"),
    token: str("token"),
    tls: bool("tls"),
    tlsCA: str("tls-ca"),
    tlsCert: str("tls-cert"),
    tlsKey: str("tls-key"),
    tlsServerName: str("tls-server-name"),
    insecure: bool("insecure"),
    help: values["help"] === true,
  };
  if (o.help) return o;
  if (o.heartbeat <= 0) throw new UsageError("--heartbeat must be greater than 0");
  if (o.concurrency < 1) throw new UsageError("--concurrency must be at least 1");
  if (o.maxEmptyRuns < 0) throw new UsageError("--max-empty-runs must be at least 0");
  if (o.killGrace < 0) throw new UsageError("--kill-grace must be at least 0");
  if (o.logFormat !== "text" && o.logFormat !== "json") {
    throw new UsageError(`--log-format: unknown format ${JSON.stringify(o.logFormat)} (text or json)`);
  }
  if (parseLevel(o.logLevel) === undefined) throw new UsageError(`--log-level: unknown level ${JSON.stringify(o.logLevel)}`);
  if (o.groups.length === 0) o.groups = [DEFAULT_GROUP];
  // --allow-executable implies --allow-commands, as in the Go and Python workers.
  o.allowCommands = o.allowCommands || o.executables.length > 0;
  if (o.name === "") o.name = `${hostname()}#${process.pid}`;
  if (!o.tasks && !o.allowCommands) {
    throw new UsageError(
      "nothing to run: no --tasks module is given and command tasks are not allowed (--allow-commands or --allow-executable PATH)",
    );
  }
  o.tlsCA ||= env["TASKGRID_TLS_CA"] ?? "";
  o.tlsCert ||= env["TASKGRID_TLS_CERT"] ?? "";
  o.tlsKey ||= env["TASKGRID_TLS_KEY"] ?? "";
  return o;
}
