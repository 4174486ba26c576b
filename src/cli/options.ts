/**
 * Flag parsing shared by the CLI commands: every number is checked against its range and a bad value is
 * refused with a message that names the flag (commander prints it and exits 1).
 */
import net from "node:net";
import { InvalidArgumentError } from "commander";
import {
  CLIENT_TIMEOUT_MS_MAX,
  CLIENT_TIMEOUT_MS_MIN,
  HEARTBEAT_TIMEOUT_MS_DEFAULT,
  HEARTBEAT_TIMEOUT_MS_MAX,
  HEARTBEAT_TIMEOUT_MS_MIN,
  PORT_MAX,
  RECONNECT_TIMEOUT_MS_DEFAULT,
  RECOVERY_TIMEOUT_MS_DEFAULT,
  SERVER_LIMITS_DEFAULT,
  SERVER_LIMIT_FLAGS,
  type ServerLimits,
} from "../core/limits.js";
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
  httpPort: { flag: "--http-port", min: 0, max: PORT_MAX, default: undefined },
} as const;

export interface MemberFlags extends Partial<ServerLimits>, MemberTlsFlags {
  fenceCommand?: string;
  heartbeatTimeoutMs: number;
  recoveryTimeoutMs: number;
  reconnectTimeoutMs: number;
  httpPort?: number;
  /** The old name of --http-port (an alias). */
  metricsPort?: number;
  httpHost: string;
  insecure?: boolean;
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

/** Loopback names and addresses (127.0.0.0/8, ::1, localhost): reachable from this machine only. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, "");
  if (bare === "localhost") return true;
  if (net.isIPv4(bare)) return bare.startsWith("127.");
  if (net.isIPv6(bare)) return bare === "::1" || /^::ffff:127\./i.test(bare);
  return false;
}

/**
 * The HTTP endpoint the member flags ask for (`--http-port`, its alias `--metrics-port`, `--http-host`),
 * or null. The endpoint has no authentication and shows lock names and clients, so a non-loopback
 * `--http-host` needs `--insecure` (put a proxy with authentication in front of it instead).
 */
export function httpEndpointFromFlags(flags: MemberFlags): { host: string; port: number } | null {
  if (flags.httpPort !== undefined && flags.metricsPort !== undefined && flags.httpPort !== flags.metricsPort) {
    throw new InvalidArgumentError(`--metrics-port is the old name of --http-port: give one of them, not both (${flags.metricsPort}, ${flags.httpPort})`);
  }
  const port = flags.httpPort ?? flags.metricsPort;
  if (port === undefined) return null;
  if (flags.insecure !== true && !isLoopbackHost(flags.httpHost)) {
    throw new InvalidArgumentError(
      `--http-host ${flags.httpHost} is reachable from other machines, and the status page and metrics have no authentication: ` +
        `anyone who reaches it could read lock names and clients. Keep the default 127.0.0.1 (scrape through a local agent or an ` +
        `authenticating proxy), or pass --insecure if the network is trusted.`,
    );
  }
  return { host: flags.httpHost, port };
}
