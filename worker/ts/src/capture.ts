// The bytes a run prints: web2py's `!clear!` rule and the numbered chunks they
// are sent in (the Go worker's capture package, same rules).
//
// Only the text after the LAST `!clear!` survives, even when a marker is split
// across two writes; the chunk carrying a marker's effect has clear set. Text is
// valid UTF-8 (protobuf strings must be): each stream decodes its own bytes, so a
// character split across two reads of one pipe is held back until it completes,
// and invalid bytes become U+FFFD.
import { StringDecoder } from "node:string_decoder";

import type { Chunk } from "./types";

export const CLEAR_MARKER = "!clear!";
/** Bounds Chunk.data (bytes), well under gRPC's 4 MB message limit. */
export const DEFAULT_MAX_CHUNK_BYTES = 256 * 1024;

/** Length of the longest suffix of text that is a proper prefix of the marker. */
export function partialMarkerLen(text: string): number {
  for (let n = Math.min(CLEAR_MARKER.length - 1, text.length); n > 0; n--) {
    if (text.endsWith(CLEAR_MARKER.slice(0, n))) return n;
  }
  return 0;
}

/** Cuts text into pieces of at most maxBytes UTF-8 bytes, never inside a character; at least one piece. */
export function split(text: string, maxBytes: number): string[] {
  const bytes = Buffer.from(text, "utf8");
  if (bytes.length <= maxBytes) return [text];
  const pieces: string[] = [];
  let start = 0;
  while (bytes.length - start > maxBytes) {
    let cut = start + maxBytes;
    while (cut > start && (bytes[cut]! & 0xc0) === 0x80) cut--;
    if (cut === start) cut = start + maxBytes;
    pieces.push(bytes.subarray(start, cut).toString("utf8"));
    start = cut;
  }
  if (start < bytes.length) pieces.push(bytes.subarray(start).toString("utf8"));
  return pieces;
}

/** Applies chunks in order as the coordinator does: a clear chunk drops everything before it. */
export function join(chunks: Chunk[]): string {
  let out = "";
  for (const c of chunks) {
    if (c.clear) out = "";
    out += c.data;
  }
  return out;
}

/** A source of bytes into an OutputBuffer with its own UTF-8 state (stdout, stderr). */
export class Stream {
  private readonly decoder = new StringDecoder("utf8");

  constructor(private readonly buffer: OutputBuffer) {}

  write(data: Buffer | string): void {
    this.buffer.feed(typeof data === "string" ? data : this.decoder.write(data));
  }

  /** Adds an incomplete character left at the end of the stream (as U+FFFD). */
  flush(): void {
    this.buffer.feed(this.decoder.end());
  }
}

/** The not-yet-sent output of one run, with its chunk numbering (seq 1, 2, 3...). */
export class OutputBuffer {
  private pending = "";
  private clear = false;
  private tail = ""; // the last marker-length-1 characters seen, to catch a split marker
  private nextSeq = 1;
  private closed = false;
  private readonly streams: Stream[] = [];

  constructor(private readonly maxChunkBytes: number = DEFAULT_MAX_CHUNK_BYTES) {}

  /** A new writer into this buffer; its pending bytes are flushed by the final take. */
  stream(): Stream {
    const s = new Stream(this);
    this.streams.push(s);
    return s;
  }

  /** Makes later writes no-ops; what was written stays takeable. */
  close(): void {
    for (const s of this.streams) s.flush();
    this.closed = true;
  }

  get seq(): number {
    return this.nextSeq;
  }

  feed(text: string): void {
    if (this.closed || text === "") return;
    const probe = this.tail + text;
    const i = probe.lastIndexOf(CLEAR_MARKER);
    if (i >= 0) {
      // The marker ends inside text (the tail is shorter than it): what follows is a suffix of text.
      this.pending = probe.slice(i + CLEAR_MARKER.length);
      this.clear = true;
    } else {
      this.pending += text;
    }
    this.tail = probe.slice(-(CLEAR_MARKER.length - 1));
  }

  /**
   * Returns the pending output as chunks and forgets it; the first carries clear when a
   * marker was seen since the previous take. A live take (final false) holds back a
   * trailing partial marker, which may still complete.
   */
  take(final: boolean): Chunk[] {
    if (final) {
      for (const s of this.streams) s.flush();
    }
    if (this.pending === "" && !this.clear) return [];
    let text = this.pending;
    let held = "";
    if (!final) {
      held = text.slice(text.length - partialMarkerLen(text));
      text = text.slice(0, text.length - held.length);
      if (text === "" && !this.clear) return [];
    }
    this.pending = held;
    const chunks = split(text, this.maxChunkBytes).map((data, i) => ({
      seq: this.nextSeq + i,
      data,
      clear: this.clear && i === 0,
    }));
    this.nextSeq += chunks.length;
    this.clear = false;
    return chunks;
  }
}
