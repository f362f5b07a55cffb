// A taskgrid client in TypeScript: queue one task, wait for it to end, print its result.
//
//   npm ci && npx tsc && node dist/main.js --coordinator 127.0.0.1:50051 --function add --args '[1, 2]'
//
// The stubs in gen/ come from protos/ through ts-proto (`make protos`). The result (the
// run's JSON text) goes to stdout; the exit code is 0 when the task ends COMPLETED, 1 when it
// ends otherwise, 2 for bad options and 3 when a call fails. docs/client-protocol.md explains
// the calls.
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { ChannelCredentials, Metadata, type ServiceError, status } from "@grpc/grpc-js";

import {
  ClientServiceClient,
  QueueTaskRequest,
  type QueueTaskResponse,
  type WaitTaskResponse,
} from "./gen/taskgrid/v1/client";
import { TaskStatus, taskStatusToJSON } from "./gen/taskgrid/v1/common";

/** Seconds one WaitTask call waits at most (the server allows up to 3600). */
const WAIT_SLICE_S = 30;

class Usage extends Error {}

/** One channel to the current coordinator; moves to the next address on UNAVAILABLE. */
class Coordinators {
  private current = 0;
  private client: ClientServiceClient | undefined;

  constructor(
    private readonly addresses: string[],
    private readonly credentials: ChannelCredentials,
    private readonly metadata: Metadata,
  ) {}

  close(): void {
    this.client?.close();
    this.client = undefined;
  }

  /** Runs `fn` on the current coordinator, trying each address once while it is away. */
  async call<T>(
    fn: (c: ClientServiceClient, md: Metadata, done: (e: ServiceError | null, r: T) => void) => void,
  ): Promise<T> {
    let last: unknown;
    for (let i = 0; i < this.addresses.length; i++) {
      this.client ??= new ClientServiceClient(this.addresses[this.current], this.credentials);
      const client = this.client;
      try {
        return await new Promise<T>((resolve, reject) =>
          fn(client, this.metadata, (err, reply) => (err ? reject(err) : resolve(reply))),
        );
      } catch (err) {
        if ((err as ServiceError).code !== status.UNAVAILABLE) throw err;
        last = err;
        console.error(`${this.addresses[this.current]} is unavailable, trying the next address`);
        this.close();
        this.current = (this.current + 1) % this.addresses.length;
      }
    }
    throw last;
  }
}

function options() {
  const { values } = parseArgs({
    options: {
      coordinator: { type: "string", default: process.env.TASKGRID_COORDINATOR || "127.0.0.1:50051" },
      function: { type: "string", default: "add" },
      args: { type: "string", default: "[1, 2]" },
      vars: { type: "string", default: "{}" },
      group: { type: "string" },
      "tls-ca": { type: "string", default: process.env.TASKGRID_TLS_CA || "" },
      // Send --args/--vars as JSON text (args/vars) instead of protobuf values: exact for
      // integers beyond 2^53, which a double (and JSON.parse) cannot hold.
      "text-args": { type: "boolean", default: false },
    },
  });
  let args: unknown;
  let vars: unknown;
  try {
    args = JSON.parse(values.args);
    vars = JSON.parse(values.vars);
  } catch (err) {
    throw new Usage(`--args and --vars must be JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(args)) throw new Usage("--args must be a JSON list");
  if (vars === null || typeof vars !== "object" || Array.isArray(vars)) {
    throw new Usage("--vars must be a JSON object");
  }
  const addresses = values.coordinator.split(",").map((a) => a.trim()).filter((a) => a);
  if (addresses.length === 0) throw new Usage("--coordinator: give at least one HOST:PORT");
  return { ...values, addresses, argsList: args, varsObject: vars as Record<string, unknown> };
}

async function main(): Promise<number> {
  let opts: ReturnType<typeof options>;
  try {
    opts = options();
  } catch (err) {
    console.error((err as Error).message);
    return 2;
  }
  let credentials = ChannelCredentials.createInsecure();
  if (opts["tls-ca"]) {
    try {
      credentials = ChannelCredentials.createSsl(readFileSync(opts["tls-ca"]));
    } catch (err) {
      console.error(`--tls-ca: ${(err as Error).message}`);
      return 2;
    }
  }
  // A coordinator with tokens wants `authorization: Bearer <token>` (role client or admin).
  const metadata = new Metadata();
  if (process.env.TASKGRID_TOKEN) metadata.set("authorization", `Bearer ${process.env.TASKGRID_TOKEN}`);
  const coordinators = new Coordinators(opts.addresses, credentials, metadata);
  try {
    // A uuid of our own makes a resend after UNAVAILABLE safe (see docs/client-protocol.md).
    const uuid = randomUUID();
    let attempts = 0;
    const queued = await coordinators.call<QueueTaskResponse>((c, md, done) => {
      attempts++;
      c.queueTask(
        // fromPartial fills every field not named here with its default.
        QueueTaskRequest.fromPartial({
          task: {
            functionName: opts.function,
            uuid,
            groupName: opts.group,
            // args_value / vars_value: protobuf values, natural from a generated client;
            // `args` / `vars` (JSON text, --text-args) keep integers beyond 2^53 exact.
            ...(opts["text-args"]
              ? { args: opts.args, vars: opts.vars }
              : { argsValue: opts.argsList, varsValue: opts.varsObject }),
          },
        }),
        md,
        done,
      );
    });
    const errors = Object.entries(queued.errors);
    const resent = errors.length === 1 && errors[0][0] === "uuid" && attempts > 1;
    if (errors.length > 0 && !resent) {
      for (const [field, message] of errors) console.error(`not queued: ${field}: ${message}`);
      return 2;
    }
    console.error(`queued task ${queued.id} (uuid ${uuid})`);

    for (;;) {
      const answer = await coordinators.call<WaitTaskResponse>((c, md, done) =>
        c.waitTask(
          { ref: { uuid }, timeout: WAIT_SLICE_S },
          md,
          { deadline: Date.now() + (WAIT_SLICE_S + 10) * 1000 },
          done,
        ),
      );
      const task = answer.task;
      const statusName = taskStatusToJSON(task?.status ?? TaskStatus.TASK_STATUS_UNSPECIFIED);
      if (!answer.done) {
        console.error(`task ${task?.id} is ${statusName}`);
        continue;
      }
      console.error(`task ${task?.id} ended ${statusName}`);
      if (task?.status !== TaskStatus.TASK_STATUS_COMPLETED) {
        if (answer.run?.traceback) console.error(answer.run.traceback);
        return 1;
      }
      // run_result is JSON text, absent when the run returned nothing (or kept no run record).
      console.log(answer.run?.runResult ?? "null");
      return 0;
    }
  } catch (err) {
    const e = err as Partial<ServiceError>;
    if (e.code === undefined) throw err; // a bug here, not an answer
    console.error(`call failed: ${status[e.code] ?? e.code}: ${e.details ?? e.message}`);
    return 3;
  } finally {
    coordinators.close();
  }
}

main().then((code) => process.exit(code));
