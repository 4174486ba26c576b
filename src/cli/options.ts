/**
 * Flag parsing shared by the CLI commands: every number is checked against its range and a bad value is
 * refused with a message that names the flag (commander prints it and exits 1).
 */
import { InvalidArgumentError } from "commander";
import { SERVER_LIMITS_DEFAULT, SERVER_LIMIT_FLAGS, type ServerLimits } from "../core/limits.js";
import type { MemberTlsFlags } from "./tls-files.js";
import type { LogLevel } from "../io/log.js";

export function integerIn(flag: string, min: number, max: number): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${flag} must be an integer from ${min} to ${max}, not "${value}"`);
    }
    return n;
  };
}

export const MEMBER_FLAG_LIMITS = {
  heartbeatTimeoutMs: { flag: "--heartbeat-timeout-ms", min: 2000, max: 60000, default: 10000 },
  recoveryTimeoutMs: { flag: "--recovery-timeout-ms", min: 100, max: 3_600_000, default: 30000 },
  reconnectTimeoutMs: { flag: "--reconnect-timeout-ms", min: 100, max: 3_600_000, default: 20000 },
  metricsPort: { flag: "--metrics-port", min: 1, max: 65534, default: undefined },
} as const;

export interface MemberFlags extends Partial<ServerLimits>, MemberTlsFlags {
  fenceCommand?: string;
  heartbeatTimeoutMs: number;
  recoveryTimeoutMs: number;
  reconnectTimeoutMs: number;
  metricsPort?: number;
  logLevel: LogLevel | "silent";
}

/** Where commander stores a flag's value: `--max-connections` → `maxConnections` (not the limit's own name). */
export function flagAttribute(flag: string): string {
  return flag.replace(/^--/, "").replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** The server limits among parsed member flags (core/limits.ts), for `limits:` of the member and embedded drivers. */
export function limitsFromFlags(flags: MemberFlags): Partial<ServerLimits> {
  const out: Partial<ServerLimits> = {};
  const parsed = flags as unknown as Record<string, number | undefined>;
  for (const name of Object.keys(SERVER_LIMIT_FLAGS) as (keyof ServerLimits)[]) {
    const value = parsed[flagAttribute(SERVER_LIMIT_FLAGS[name].flag)];
    if (value !== undefined) out[name] = value;
  }
  return out;
}

/** Help text of each limit flag; the range comes from SERVER_LIMIT_FLAGS and the default from SERVER_LIMITS_DEFAULT. */
export const SERVER_LIMIT_HELP: Readonly<Record<keyof ServerLimits, string>> = {
  connectionsMax: "open connections per member; more are closed at once",
  greetingTimeoutMs: "a connection that has not greeted in this time is closed",
  clientRequestsMax: "lock requests one client may have waiting",
  clientLocksMax: "lock entries one client may hold",
  sessionUnackedMax: "messages a client may leave unacknowledged before it is fenced",
  invalidationTimeoutMs: "a client that has not answered an invalidation in this time is fenced (0 = never)",
  storeUnreachableMs: "a leader whose store does not answer for this long resigns",
};

export { SERVER_LIMITS_DEFAULT, SERVER_LIMIT_FLAGS };
