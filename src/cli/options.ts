/**
 * Flag parsing shared by the CLI commands: every number is checked against its range and a bad value is
 * refused with a message that names the flag (commander prints it and exits 1).
 */
import { InvalidArgumentError } from "commander";

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

export interface MemberFlags {
  fenceCommand?: string;
  heartbeatTimeoutMs: number;
  recoveryTimeoutMs: number;
  reconnectTimeoutMs: number;
  metricsPort?: number;
}
