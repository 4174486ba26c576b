/**
 * Flag parsing shared by the CLI commands: every number is checked against its range and a bad value is
 * refused with a message that names the flag (commander prints it and exits 1).
 */
import { InvalidArgumentError } from "commander";
import {
  CLIENT_TIMEOUT_MS_MAX,
  CLIENT_TIMEOUT_MS_MIN,
  HEARTBEAT_TIMEOUT_MS_DEFAULT,
  HEARTBEAT_TIMEOUT_MS_MAX,
  HEARTBEAT_TIMEOUT_MS_MIN,
  PORT_MAX,
  PORT_MIN,
  RECONNECT_TIMEOUT_MS_DEFAULT,
  RECOVERY_TIMEOUT_MS_DEFAULT,
  SERVER_LIMITS_DEFAULT,
  SERVER_LIMIT_FLAGS,
  type ServerLimits,
} from "../core/limits.js";
import type { MemberTlsFlags } from "./tls-files.js";

export function integerIn(flag: string, min: number, max: number): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${flag} must be an integer from ${min} to ${max}, not "${value}"`);
    }
    return n;
  };
}

/** The member flags that are not server limits; every value comes from core/limits.ts. */
export const MEMBER_FLAG_LIMITS = {
  heartbeatTimeoutMs: {
    flag: "--heartbeat-timeout-ms",
    min: HEARTBEAT_TIMEOUT_MS_MIN,
    max: HEARTBEAT_TIMEOUT_MS_MAX,
    default: HEARTBEAT_TIMEOUT_MS_DEFAULT,
  },
  recoveryTimeoutMs: { flag: "--recovery-timeout-ms", min: CLIENT_TIMEOUT_MS_MIN, max: CLIENT_TIMEOUT_MS_MAX, default: RECOVERY_TIMEOUT_MS_DEFAULT },
  reconnectTimeoutMs: { flag: "--reconnect-timeout-ms", min: CLIENT_TIMEOUT_MS_MIN, max: CLIENT_TIMEOUT_MS_MAX, default: RECONNECT_TIMEOUT_MS_DEFAULT },
  metricsPort: { flag: "--metrics-port", min: PORT_MIN, max: PORT_MAX, default: undefined },
} as const;

export interface MemberFlags extends Partial<ServerLimits>, MemberTlsFlags {
  fenceCommand?: string;
  heartbeatTimeoutMs: number;
  recoveryTimeoutMs: number;
  reconnectTimeoutMs: number;
  metricsPort?: number;
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
