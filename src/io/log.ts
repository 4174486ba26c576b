/**
 * One-line logs to stderr: `keylock[<who>] <ISO time> <message>`. Tolerated errors carry their reason
 * on the same line (STYLE.md). Tests pass a silent or capturing logger.
 */
export type Logger = (message: string) => void;

export function stderrLogger(who: string): Logger {
  return (message) => process.stderr.write(`keylock[${who}] ${new Date().toISOString()} ${message}\n`);
}

export const silentLogger: Logger = () => undefined;

/**
 * A logger for floods (a peer opening sockets by the thousand): logs at most one line per `intervalMs`;
 * the lines in between are counted and the next line logged says how many were left out.
 */
export function throttledLogger(log: Logger, intervalMs: number, now: () => number = Date.now): Logger {
  let last = -Infinity;
  let skipped = 0;
  return (message) => {
    const t = now();
    if (t - last < intervalMs) {
      skipped++;
      return;
    }
    last = t;
    log(skipped === 0 ? message : `${message} (and ${skipped} similar line(s) left out in the last ${intervalMs} ms or more)`);
    skipped = 0;
  };
}
