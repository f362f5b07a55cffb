// Log lines on stderr, text (key=value, like Go's slog) or JSON, one per line.
// Nothing secret is ever passed in: tokens never reach a logger.

export enum Level {
  Debug = 10,
  Info = 20,
  Warn = 30,
  Error = 40,
}

const NAMES: Record<string, Level> = {
  DEBUG: Level.Debug,
  INFO: Level.Info,
  WARNING: Level.Warn,
  WARN: Level.Warn,
  ERROR: Level.Error,
  CRITICAL: Level.Error,
};

/** The level named (DEBUG, INFO, WARNING, ERROR), or undefined. */
export function parseLevel(name: string): Level | undefined {
  return NAMES[name.toUpperCase()];
}

export type Fields = Record<string, unknown>;

function levelName(level: Level): string {
  return level >= Level.Error ? "ERROR" : level >= Level.Warn ? "WARN" : level >= Level.Info ? "INFO" : "DEBUG";
}

function quote(value: unknown): string {
  const text = typeof value === "string" ? value : value instanceof Error ? value.message : JSON.stringify(value);
  const s = text ?? String(value);
  return /^[^\s"=]+$/.test(s) ? s : JSON.stringify(s);
}

export class Logger {
  constructor(
    private readonly level: Level = Level.Info,
    private readonly format: "text" | "json" = "text",
    private readonly write: (line: string) => void = (line) => process.stderr.write(line),
  ) {}

  enabled(level: Level): boolean {
    return level >= this.level;
  }

  log(level: Level, msg: string, fields: Fields = {}): void {
    if (!this.enabled(level)) return;
    const time = new Date().toISOString();
    if (this.format === "json") {
      const record: Fields = { time, level: levelName(level), msg };
      for (const [k, v] of Object.entries(fields)) record[k] = v instanceof Error ? v.message : v;
      this.write(JSON.stringify(record) + "\n");
      return;
    }
    const parts = [`time=${time}`, `level=${levelName(level)}`, `msg=${quote(msg)}`];
    for (const [k, v] of Object.entries(fields)) parts.push(`${k}=${quote(v)}`);
    this.write(parts.join(" ") + "\n");
  }

  debug(msg: string, fields?: Fields): void {
    this.log(Level.Debug, msg, fields);
  }
  info(msg: string, fields?: Fields): void {
    this.log(Level.Info, msg, fields);
  }
  warn(msg: string, fields?: Fields): void {
    this.log(Level.Warn, msg, fields);
  }
  error(msg: string, fields?: Fields): void {
    this.log(Level.Error, msg, fields);
  }
}
