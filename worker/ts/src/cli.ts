#!/usr/bin/env node
// taskgrid-worker-ts: the command line. Exit codes: 0 done (TERMINATE, KILL, a signal,
// --max-empty-runs), 1 registration rejected as invalid, 2 bad flags or settings,
// 5 credentials rejected, 6 another live worker kept this worker's name.
//
// The first SIGTERM or SIGINT drains the worker like TERMINATE (no more leases,
// running tasks finish and are reported, exit 0); a second acts like KILL (running
// tasks are stopped and reported STOPPED, exit 0).
import { Agent } from "./agent";
import { Coordinators, type Security, usesTLS } from "./channel";
import { CommandPolicy } from "./command";
import { parse, UsageError, usage } from "./config";
import { loadHandlers } from "./handlers";
import { Logger, parseLevel } from "./log";
import { Pool } from "./pool";

export const EXIT_USAGE = 2;

function fail(message: string): number {
  process.stderr.write(`taskgrid-worker-ts: ${message}\n`);
  return EXIT_USAGE;
}

export async function main(argv: string[]): Promise<number> {
  let o;
  try {
    o = parse(argv);
  } catch (err) {
    if (err instanceof UsageError) return fail(err.message);
    throw err;
  }
  if (o.help) {
    process.stdout.write(usage());
    return 0;
  }
  const log = new Logger(parseLevel(o.logLevel), o.logFormat);
  let functions: string[] = [];
  if (o.tasks) {
    try {
      functions = [...(await loadHandlers(o.tasks)).keys()];
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const why = e.code === "ERR_MODULE_NOT_FOUND" ? e.message : (e.stack ?? String(err)); // a bug in it: where
      return fail(`cannot load --tasks ${o.tasks}: ${why}`);
    }
    if (functions.length === 0 && !o.allowCommands) {
      return fail(`nothing to run: --tasks ${o.tasks} exports no functions and command tasks are not allowed`);
    }
  }
  let commands: CommandPolicy | null = null;
  if (o.allowCommands) {
    try {
      commands = new CommandPolicy(o.executables);
    } catch (err) {
      return fail((err as Error).message);
    }
  }
  const security: Security = {
    token: o.token,
    tls: o.tls,
    caFile: o.tlsCA,
    certFile: o.tlsCert,
    keyFile: o.tlsKey,
    serverName: o.tlsServerName,
    insecure: o.insecure,
  };
  let rpc: Coordinators;
  try {
    rpc = await Coordinators.create(o.coordinator, security, log);
  } catch (err) {
    return fail(`cannot start the worker: ${(err as Error).message}`);
  }
  const agent = new Agent(
    {
      workerName: o.name,
      groups: o.groups,
      heartbeatMs: o.heartbeat * 1000,
      maxEmptyRuns: o.maxEmptyRuns,
      concurrency: o.concurrency,
      killGraceMs: o.killGrace * 1000,
      functions,
      commands: commands !== null,
      coordinator: o.coordinator,
      security: { tls: usesTLS(security), clientCert: o.tlsCert !== "" },
      log,
    },
    rpc,
  );
  agent.pool = new Pool(
    { tasksPath: o.tasks, concurrency: o.concurrency, killGraceMs: o.killGrace * 1000, commands, log },
    (result) => agent.onFinish(result),
    () => agent.wakeMain.notify(),
  );
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    signals++;
    if (signals === 1) {
      log.info("signal received: finishing running tasks, then leaving (send it again to stop them now)", { signal: sig });
      agent.requestDrain();
    } else {
      log.info("signal received again: stopping tasks and leaving", { signal: sig });
      agent.requestExit();
    }
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  const code = await agent.run();
  process.off("SIGTERM", onSignal);
  process.off("SIGINT", onSignal);
  return code;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`taskgrid-worker-ts: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
