// The heartbeat loop: every `heartbeat` seconds while there is a session, with
// every held lease and the RSS. It runs on its own timer: the tasks run in other
// processes, so no task can delay it.
import { readFileSync } from "node:fs";

import type { ServiceError } from "@grpc/grpc-js";

import type { HeartbeatResponse } from "../gen/taskgrid/v1/worker";
import type { Agent } from "./agent";
import { keysOf, ref, staleKeys } from "./agent";
import { Backoff } from "./backoff";
import { Waker } from "./wake";

const PAGE_SIZE = 4096;

/** Resident memory of this process and pids, from Linux's /proc (0 for what cannot be read). */
export function rssBytes(pids: number[]): number {
  let total = 0;
  for (const pid of [process.pid, ...pids]) {
    try {
      const fields = readFileSync(`/proc/${pid}/statm`, "utf8").trim().split(/\s+/);
      const pages = Number(fields[1]);
      if (Number.isFinite(pages)) total += pages * PAGE_SIZE;
    } catch {
      /* gone, or not Linux */
    }
  }
  return total;
}

export class Heartbeat {
  private readonly waker = new Waker();

  constructor(private readonly a: Agent) {}

  /** Beats at once (a drain must be told now, a new session announced). */
  wake(): void {
    this.waker.notify();
  }

  async loop(): Promise<void> {
    const backoff = new Backoff();
    while (!this.a.stopping) {
      if (!this.a.session) {
        await this.waker.wait(-1); // registration and exit wake us
        continue;
      }
      let delay: number;
      if (await this.once()) {
        backoff.reset();
        delay = this.a.intervalMs;
      } else {
        delay = Math.min(backoff.next(), this.a.intervalMs);
      }
      if (this.a.stopping) return;
      await this.waker.wait(delay);
    }
  }

  /** One Heartbeat, its answer obeyed; false when it should be retried soon. */
  private async once(): Promise<boolean> {
    const a = this.a;
    for (let round = 0; round < 3; round++) {
      const session = a.session;
      const generation = a.generation;
      if (!session) return true;
      const request = {
        session,
        running: a.heldKeys().map(ref),
        rssBytes: rssBytes(a.pool.childPids()),
        draining: a.leaving === "TERMINATE",
        leaving: false,
      };
      let response: HeartbeatResponse;
      try {
        response = await a.call<HeartbeatResponse>("heartbeat", request, Math.max(a.intervalMs, 1000));
      } catch (e) {
        const err = e as ServiceError;
        if (a.failed("Heartbeat", err, generation) && staleKeys(err.metadata).length > 0) continue;
        return false;
      }
      a.noteSuccess();
      if (generation !== a.generation) return true;
      if (response.heartbeat > 0) a.intervalMs = response.heartbeat * 1000;
      const stale = keysOf(response.stale);
      if (stale.length > 0) a.dropLeases(stale, "Heartbeat");
      a.applyStatus(response.status);
      a.applyStops(keysOf(response.stop));
      return true;
    }
    return false;
  }
}
