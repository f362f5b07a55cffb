// The messages between the pool (parent) and a forked child, over the IPC channel.

export interface RunMessage {
  type: "run";
  token: string; // the run's sentinel token (see sentinel.ts)
  functionName: string;
  args: string;
  vars: string;
  id: number;
  uuid: string;
  runId: number;
  attempt: number;
  taskName: string;
}

export interface AbortMessage {
  type: "abort";
}

export type ToChild = RunMessage | AbortMessage;

export interface ReadyMessage {
  type: "ready";
}

export interface DoneMessage {
  type: "done";
  token: string;
  ok: boolean;
  result?: string; // JSON text when ok
  traceback?: string;
  exiting?: boolean; // the child leaves after this run (an uncaught error): do not give it another
}

export type FromChild = ReadyMessage | DoneMessage;
