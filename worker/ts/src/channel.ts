// How the worker reaches its coordinators: the address list, TLS and the token,
// and one client to the current address that moves to the next one when a call
// finds its coordinator away (docs/connecting.md). The session lives in the agent
// and rides in every request, so moving keeps it; only NOT_FOUND registers again.
import { lookup as dnsLookup } from "node:dns/promises";
import { readFileSync } from "node:fs";
import { isIP } from "node:net";

import { type ChannelCredentials, type ChannelOptions, credentials, Metadata, type ServiceError, status } from "@grpc/grpc-js";

import { WorkerServiceClient } from "../gen/taskgrid/v1/worker";
import type { Logger } from "./log";

const GRPC_SCHEMES = ["unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:", "passthrough:"];

export interface Entry {
  host: string;
  port: string;
  target: string; // set for an entry with a gRPC scheme, dialed as it is
}

/** Splits a coordinator list (HOST:PORT, [ADDR]:PORT for IPv6, commas); throws on a bad entry. */
export function parseCoordinators(list: string): Entry[] {
  const entries: Entry[] = [];
  for (const raw of list.split(",")) {
    const item = raw.trim();
    if (item === "") {
      throw new Error(`coordinator list ${JSON.stringify(list)} has an empty address: give HOST:PORT addresses separated by commas`);
    }
    if (GRPC_SCHEMES.some((s) => item.startsWith(s))) {
      entries.push({ host: "", port: "", target: item });
      continue;
    }
    const m = /^\[([^\]]+)\]:([^:]*)$/.exec(item) ?? /^([^:[\]]+):([^:]*)$/.exec(item);
    const port = m ? Number(m[2]) : NaN;
    if (!m || m[1] === "") {
      throw new Error(`bad coordinator address ${JSON.stringify(item)}: want HOST:PORT ([ADDR]:PORT for IPv6)`);
    }
    if (!/^\d+$/.test(m[2]!) || port < 1 || port > 65535) {
      throw new Error(`bad coordinator address ${JSON.stringify(item)}: the port must be a number from 1 to 65535`);
    }
    entries.push({ host: m[1]!, port: m[2]!, target: "" });
  }
  return entries;
}

function joinHostPort(host: string, port: string): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, "");
  if (h === "localhost" || h.endsWith(".localhost")) return true;
  if (isIP(h) === 4) return h.startsWith("127.");
  if (isIP(h) === 6) return h === "::1" || h === "0:0:0:0:0:0:0:1";
  return false;
}

/** Whether every address of a target is this machine (a loopback IP, localhost, a unix socket). */
export function isLoopbackTarget(target: string): boolean {
  if (target.startsWith("unix:") || target.startsWith("unix-abstract:")) return true;
  const hosts: string[] = [];
  for (let address of target.split(",")) {
    address = address.trim();
    for (const scheme of ["dns:", "ipv4:", "ipv6:", "passthrough:"]) {
      if (address.startsWith(scheme)) {
        address = address.slice(scheme.length);
        address = address.slice(address.lastIndexOf("/") + 1);
      }
    }
    const m = /^\[([^\]]+)\](:\d+)?$/.exec(address) ?? /^([^:]+)(:\d+)?$/.exec(address);
    hosts.push(m ? m[1]! : address);
  }
  return hosts.length > 0 && hosts.every(isLoopbackHost);
}

export interface Security {
  token: string;
  tls: boolean;
  caFile: string;
  certFile: string;
  keyFile: string;
  serverName: string;
  insecure: boolean;
}

export function usesTLS(s: Security): boolean {
  return s.tls || s.caFile !== "" || s.certFile !== "" || s.keyFile !== "" || s.serverName !== "";
}

/** Checks the settings against the list and reads the PEM files now; throws on a bad setting. */
export function channelCredentials(s: Security, list: string): ChannelCredentials {
  if (s.token && !/^[!-~]+$/.test(s.token)) throw new Error("the token must be printable ASCII without spaces");
  if ((s.certFile === "") !== (s.keyFile === "")) {
    throw new Error("a TLS client certificate and its key go together (--tls-cert and --tls-key)");
  }
  if (!usesTLS(s)) {
    if (s.token && !s.insecure && !isLoopbackTarget(list)) {
      throw new Error(`refusing to send a token in plain text to ${list}: use TLS (--tls-ca or --tls) or, on a trusted network, --insecure`);
    }
    return credentials.createInsecure();
  }
  const read = (path: string, what: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new Error(`cannot read the TLS ${what} file: ${(err as Error).message}`);
    }
  };
  const ca = s.caFile ? read(s.caFile, "CA") : null;
  const key = s.keyFile ? read(s.keyFile, "key") : null;
  const cert = s.certFile ? read(s.certFile, "certificate") : null;
  return credentials.createSsl(ca, key, cert);
}

interface Address {
  target: string;
  name: string; // NAME:PORT it was resolved from ("" when given as is)
  host: string; // the name alone, for TLS
}

function describe(a: Address): string {
  return a.name ? `${a.name} (${a.target})` : a.target;
}

async function expand(entries: Entry[], log: Logger): Promise<Address[]> {
  const out: Address[] = [];
  const add = (a: Address): void => {
    if (!out.some((o) => o.target === a.target && o.name === a.name)) out.push(a);
  };
  for (const e of entries) {
    if (e.target) {
      add({ target: e.target, name: "", host: "" });
      continue;
    }
    const hostPort = joinHostPort(e.host, e.port);
    if (isIP(e.host)) {
      add({ target: hostPort, name: "", host: "" });
      continue;
    }
    try {
      const ips = await dnsLookup(e.host, { all: true });
      if (ips.length === 0) throw new Error("no address");
      for (const ip of ips) add({ target: joinHostPort(ip.address, e.port), name: hostPort, host: e.host });
    } catch (err) {
      log.warn("cannot resolve a coordinator name; dialing it as it is", { name: hostPort, error: (err as Error).message });
      add({ target: hostPort, name: "", host: "" });
    }
  }
  return out;
}

function sameSet(x: Address[], y: Address[]): boolean {
  const key = (a: Address): string => `${a.target}|${a.name}`;
  const a = x.map(key).sort();
  const b = y.map(key).sort();
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

export type Method = "register" | "lease" | "heartbeat" | "sendOutput" | "report" | "release";

type Unary = (req: unknown, md: Metadata, opts: { deadline: Date }, cb: (err: ServiceError | null, res: unknown) => void) => void;

/** gRPC's own reconnect backoff grows to minutes; a restarted coordinator must hear from us well within dead_after. */
const CHANNEL_OPTIONS: ChannelOptions = {
  "grpc.max_receive_message_length": 64 << 20,
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 1000,
  "grpc.min_reconnect_backoff_ms": 100,
  "grpc.enable_retries": 0,
};

/** One client to the current coordinator, moved along the list when a call finds it away. */
export class Coordinators {
  private addrs: Address[] = [];
  private index = 0;
  private client!: WorkerServiceClient;
  private epoch = 0;
  private misses = 0;
  private closed = false;

  private constructor(
    private readonly entries: Entry[],
    private readonly creds: ChannelCredentials,
    private readonly security: Security,
    private readonly log: Logger,
  ) {}

  static async create(list: string, security: Security, log: Logger): Promise<Coordinators> {
    const entries = parseCoordinators(list);
    const creds = channelCredentials(security, list);
    const c = new Coordinators(entries, creds, security, log);
    c.addrs = await expand(entries, log);
    c.client = c.dial(c.addrs[0]!);
    if (c.addrs.length > 1) log.info("coordinator addresses", { addresses: c.addrs.map(describe).join(", ") });
    return c;
  }

  private dial(a: Address): WorkerServiceClient {
    const options: ChannelOptions = { ...CHANNEL_OPTIONS };
    if (this.security.serverName) {
      options["grpc.ssl_target_name_override"] = this.security.serverName;
      options["grpc.default_authority"] = this.security.serverName;
    } else if (a.name) {
      options["grpc.default_authority"] = a.name;
      if (usesTLS(this.security)) options["grpc.ssl_target_name_override"] = a.host;
    }
    return new WorkerServiceClient(a.target, this.creds, options);
  }

  private metadata(): Metadata {
    const md = new Metadata();
    if (this.security.token) md.set("authorization", `Bearer ${this.security.token}`);
    return md;
  }

  private once(client: WorkerServiceClient, method: Method, request: unknown, timeoutMs: number): Promise<unknown> {
    const fn = (client as unknown as Record<Method, Unary>)[method].bind(client) as Unary;
    return new Promise((resolve, reject) => {
      fn(request, this.metadata(), { deadline: new Date(Date.now() + timeoutMs) }, (err, res) => (err ? reject(err) : resolve(res)));
    });
  }

  /** Makes a unary call, moving on (and retrying at once) while coordinators are away; rejects with a ServiceError. */
  async call<T>(method: Method, request: unknown, timeoutMs: number): Promise<T> {
    for (let failures = 0; ; ) {
      const client = this.client;
      const epoch = this.epoch;
      const size = this.addrs.length;
      try {
        const res = (await this.once(client, method, request, timeoutMs)) as T;
        this.misses = 0;
        return res;
      } catch (e) {
        const err = e as ServiceError;
        const code = err.code;
        if (code === status.CANCELLED && this.epoch !== epoch) continue; // closed under us by a move
        const away = code === status.UNAVAILABLE || (code === status.DEADLINE_EXCEEDED && method !== "lease");
        if (!away) {
          if (code !== status.CANCELLED && code !== status.DEADLINE_EXCEEDED) this.misses = 0;
          throw err;
        }
        await this.moveFrom(epoch, code);
        if (++failures >= size) throw err;
      }
    }
  }

  private async moveFrom(epoch: number, code: number): Promise<void> {
    if (epoch !== this.epoch || this.closed) return;
    const from = this.addrs[this.index]!;
    let next = (this.index + 1) % this.addrs.length;
    if (++this.misses >= this.addrs.length) {
      this.misses = 0;
      const fresh = await expand(this.entries, this.log);
      if (epoch !== this.epoch || this.closed) return;
      if (!sameSet(fresh, this.addrs)) {
        this.log.info("coordinator addresses changed", { addresses: fresh.map(describe).join(", ") });
        this.addrs = fresh;
        next = 0;
      }
    }
    const to = this.addrs[next]!;
    if (to.target === from.target && to.name === from.name) {
      this.index = next;
      return; // a single address: gRPC reconnects by itself
    }
    const old = this.client;
    this.client = this.dial(to);
    this.index = next;
    this.epoch++;
    this.log.info("coordinator away, moving to the next one", { from: describe(from), to: describe(to), code: status[code] });
    old.close();
  }

  close(): void {
    this.closed = true;
    this.client.close();
  }
}
