/**
 * Logs. Drivers call a `Logger`: `log(message, fields?)`, where fields name the level (default "info")
 * and whatever applies (`rid` as 16 hex digits, `key`, `term`, `address`, ...). Tests pass a silent or
 * capturing function; a plain `(line) => ...` is a Logger.
 *
 * `processLogger()` is what the command line uses: pino writing JSON lines to stderr (`level`, `time` as
 * ISO 8601, the process's fixed fields such as `slot`, the context fields such as the current `term`,
 * the call's fields, `msg`), synchronously so the last lines before an exit are not lost; or, when stderr
 * is a terminal, the same records as readable single lines (`prettyLine`). Tolerated errors carry their
 * reason on the same line (STYLE.md).
 */
import pino from "pino";

export type LogLevel = "debug" | "info" | "warn" | "error";
export const LOG_LEVELS: readonly (LogLevel | "silent")[] = ["debug", "info", "warn", "error", "silent"];

export interface LogFields {
  /** Default "info". */
  level?: LogLevel;
  [field: string]: unknown;
}

export type Logger = (message: string, fields?: LogFields) => void;

export const silentLogger: Logger = () => undefined;

export interface ProcessLoggerOptions {
  /** Fields on every line, e.g. `{ slot: 0 }`. */
  base?: Record<string, unknown>;
  /** Lines below this level are dropped (default "info"). */
  level?: LogLevel | "silent";
  /** Fields computed for each line (e.g. the member's current term); a call's own fields win. */
  context?: () => Record<string, unknown>;
  /** Default: JSON unless stderr is a terminal. */
  format?: "json" | "pretty";
  /** Default: stderr (file descriptor 2). */
  write?: (line: string) => void;
}

/** A Logger backed by pino, for processes (the CLI): JSON lines, or readable lines on a terminal. */
export function processLogger(options: ProcessLoggerOptions = {}): Logger & { pino: pino.Logger } {
  const format = options.format ?? (process.stderr.isTTY ? "pretty" : "json");
  const write = options.write;
  const destination =
    format === "pretty"
      ? { write: (json: string) => (write ?? stderrWrite)(prettyLine(json)) }
      : write === undefined
        ? pino.destination({ dest: 2, sync: true })
        : { write };
  const logger = pino(
    {
      level: options.level ?? "info",
      base: { pid: process.pid, ...options.base },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      ...(options.context === undefined ? {} : { mixin: options.context }),
    },
    destination,
  );
  const log = ((message: string, fields?: LogFields) => {
    if (fields === undefined) {
      logger.info(message);
      return;
    }
    const { level = "info", ...rest } = fields;
    logger[level](rest, message);
  }) as Logger & { pino: pino.Logger };
  log.pino = logger;
  return log;
}

function stderrWrite(line: string): void {
  process.stderr.write(line);
}

/** One JSON log record as a readable line: `HH:MM:SS.mmm LEVEL [slot 0 term 5] message rid=... key=...`. */
export function prettyLine(json: string): string {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith("\n") ? json : `${json}\n`;
  }
  const { level, time, msg, slot, term, component, pid: _pid, ...rest } = record;
  const clock = typeof time === "string" ? time.slice(11, 23) : "";
  const where = [
    component === undefined ? "" : text(component),
    slot === undefined ? "" : `slot ${text(slot)}`,
    term === undefined ? "" : `term ${text(term)}`,
  ]
    .filter((part) => part !== "")
    .join(" ");
  const extra = Object.entries(rest)
    .map(([name, value]) => `${name}=${text(value)}`)
    .join(" ");
  const head = `${clock} ${text(level ?? "info").toUpperCase().padEnd(5)}${where === "" ? "" : ` [${where}]`}`;
  return `${head} ${text(msg ?? "")}${extra === "" ? "" : ` ${extra}`}\n`;
}

function text(value: unknown): string {
  return typeof value === "string" ? value : JSON.stringify(value);
}

/**
 * A logger for floods (a peer opening sockets by the thousand): logs at most one line per `intervalMs`;
 * the lines in between are counted and the next line logged says how many were left out.
 */
export function throttledLogger(log: Logger, intervalMs: number, now: () => number = Date.now): Logger {
  let last = -Infinity;
  let skipped = 0;
  return (message, fields) => {
    const t = now();
    if (t - last < intervalMs) {
      skipped++;
      return;
    }
    last = t;
    log(skipped === 0 ? message : `${message} (and ${skipped} similar line(s) left out in the last ${intervalMs} ms or more)`, fields);
    skipped = 0;
  };
}

/** `log` with `fields` added to every line (a call's own fields win). */
export function withFields(log: Logger, fields: Record<string, unknown>): Logger {
  return (message, own) => log(message, own === undefined ? fields : { ...fields, ...own });
}
