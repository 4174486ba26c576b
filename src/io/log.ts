/**
 * One-line logs to stderr: `keylock[<who>] <ISO time> <message>`. Tolerated errors carry their reason
 * on the same line (STYLE.md). Tests pass a silent or capturing logger.
 */
export type Logger = (message: string) => void;

export function stderrLogger(who: string): Logger {
  return (message) => process.stderr.write(`keylock[${who}] ${new Date().toISOString()} ${message}\n`);
}

export const silentLogger: Logger = () => undefined;
