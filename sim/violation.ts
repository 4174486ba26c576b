/**
 * The one violation type of every simulator (lock, drivers, election, cluster): a checker's name, what
 * it saw, and where to replay it. A checker throws it (or records it) and the run stops; the report
 * names the seed, the virtual time and the last trace lines, and the replay command reproduces it.
 * Guarantees: nothing here reads a clock or randomness; a violation is plain data plus an Error for stacks.
 */
export class Violation<Checker extends string = string> extends Error {
  constructor(
    readonly checker: Checker,
    readonly detail: string,
  ) {
    super(`${checker}: ${detail}`);
    this.name = "Violation";
  }
}

/** What a run reports about its first violation. */
export interface ViolationReport<Checker extends string = string> {
  readonly seed: number;
  readonly checker: Checker;
  readonly detail: string;
  /** Virtual time of the violation, µs. */
  readonly atUs: number;
  /** The last trace lines before it. */
  readonly trace: readonly string[];
}

/** One readable block: the checker, the time, the replay command and the trace tail. */
export function formatViolationReport(report: ViolationReport, replay: string): string {
  return [
    `violation of ${report.checker} at ${(report.atUs / 1000).toFixed(3)} ms (seed ${report.seed}): ${report.detail}`,
    `replay: ${replay}`,
    ...report.trace.map((line) => `  ${line}`),
  ].join("\n");
}
