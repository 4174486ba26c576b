/** Small statistics helpers for the benchmarks: percentiles over latency samples in microseconds. */
export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index]!;
}

export function nowUs(): number {
  return Number(process.hrtime.bigint()) / 1000;
}

/**
 * The echo, load and hand-off jobs run their workload for WARMUP_MS before the measured window of
 * `durationMs` (every system alike): what is counted is the steady state, not V8's interpreter and first
 * compilations (a short run otherwise measures those, in every process of the row).
 */
export const WARMUP_MS = 500;
