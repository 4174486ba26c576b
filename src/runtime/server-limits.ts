/**
 * Per-client limits of the lock server driver (DESIGN §9, core/limits.ts), for runtime/server.ts: the
 * close of a client over its requests-in-flight or lock-entries limit, and the invalidation deadline's
 * timers (the decision is core/invalidation-deadlines.ts).
 *
 * Guarantees:
 * - `clientLimitViolation` counts the trip (a client limit violation and a protocol error), logs it and
 *   closes that client's connection only; the lock table is not touched.
 * - `logUnacknowledged` names a client over `sessionUnackedMax` and the flag that sets the limit.
 * - Invalidation deadline: one timer per client with invalidations outstanding, armed for the oldest. A
 *   client that has not answered one in `invalidationTimeoutMs` (its callback hangs, or it stopped
 *   reading) is reported `stuck` once, with its outstanding invalidations cleared: the server machine
 *   treats it as vanished (fenced, reason client_reconnect, the closest of DESIGN §6's list; the log
 *   names the real cause), then reclaimed, so its keys go to the clients waiting for them. A limit of 0
 *   keeps no timer. Each answer feeds the invalidation round-trip histogram.
 * - A timer of a session the server dropped or replaced, or of a stopping server, does nothing; `clear`
 *   cancels it (on drop, on forget-locks, on stop). It expires only after the input already due was read
 *   (clock.defer, as the election's timers: B41), so answers that came in during a stall count.
 * Relies on: the driver calling `sent`/`answered` for every invalidation sent and answered, and `clear`
 * whenever the session's entries go; `isCurrent` saying whether the session is still the server's.
 */
import { checkInvalidations } from "../core/invalidation-deadlines.js";
import { keyToHex, keyToText, ridToHex, type Key } from "../core/keys.js";
import type { Rid } from "../core/lock-messages.js";
import { SERVER_LIMIT_FLAGS, type ServerLimits } from "../core/limits.js";
import type { Logger } from "../io/log.js";
import { setDeadline, type Clock, type MessageConnection, type Timer } from "../io/world.js";
import type { Metrics, ServerCounts } from "./metrics.js";

/** What the limits read and keep of a client session (runtime/server.ts ClientSession). */
export interface LimitedSession {
  readonly rid: Rid;
  readonly state: { readonly name: string };
  readonly connection: MessageConnection | null;
  /** Invalidations sent and not answered yet: key → when sent (ms), oldest first (insertion order). */
  readonly invalidations: Map<Key, number>;
  /** Fires when the oldest of `invalidations` reaches limits.invalidationTimeoutMs (one timer per client). */
  invalidationTimer: Timer | null;
}

/** A client over its requests-in-flight or lock-entries limit: its connection closes, as for any protocol error. */
export function clientLimitViolation(counters: ServerCounts, log: Logger, session: LimitedSession, what: string): void {
  counters.clientLimitViolations++;
  counters.protocolErrors++;
  const reason = `protocol error: client ${ridToHex(session.rid)} (${session.state.name}) asked for ${what}`;
  log(`closing the connection of client ${ridToHex(session.rid)}: ${reason}`, { rid: ridToHex(session.rid) });
  session.connection?.close(reason);
}

/**
 * A client keeps more than `sessionUnackedMax` messages unanswered or unacknowledged: the line that says
 * so (the driver then reports it stuck, so its locks do not block their keys until the next failover).
 */
export function logUnacknowledged(log: Logger, session: LimitedSession, kept: number, limit: number): void {
  log(
    `client ${ridToHex(session.rid)} (${session.state.name}) keeps ${kept} messages unacknowledged ` +
      `(at most ${limit}, ${SERVER_LIMIT_FLAGS.sessionUnackedMax.flag}); fencing it`,
    { level: "warn", rid: ridToHex(session.rid) },
  );
}

export interface InvalidationDeadlineHost {
  readonly clock: Clock;
  readonly limits: ServerLimits;
  readonly metrics: Metrics;
  readonly counters: ServerCounts;
  readonly log: Logger;
  /** Whether the session is still the server's (not dropped or replaced) and the server not stopping. */
  isCurrent(session: LimitedSession): boolean;
  /** The session left an invalidation unanswered too long: the server machine gets `client-stuck`. */
  stuck(rid: Rid): void;
}

/** The invalidation deadline's timers, one per client with invalidations outstanding. */
export class InvalidationDeadlines {
  constructor(private readonly host: InvalidationDeadlineHost) {}

  /** An invalidation of `key` went to the client: arm its timer if none is. */
  sent(session: LimitedSession, key: Key): void {
    session.invalidations.set(key, this.host.clock.now());
    if (this.host.limits.invalidationTimeoutMs === 0) return;
    if (session.invalidationTimer === null) this.arm(session, this.host.limits.invalidationTimeoutMs);
  }

  /** The client answered the invalidation of `key`. */
  answered(session: LimitedSession, key: Key): void {
    const sentAtMs = session.invalidations.get(key);
    if (sentAtMs !== undefined) this.host.metrics.invalidationRoundTrip.observe((this.host.clock.now() - sentAtMs) / 1000);
    session.invalidations.delete(key);
    if (session.invalidations.size === 0) this.clear(session);
  }

  /** Forgets the session's outstanding invalidations and cancels its timer. */
  clear(session: LimitedSession): void {
    if (session.invalidationTimer !== null) this.host.clock.clearTimeout(session.invalidationTimer);
    session.invalidationTimer = null;
    session.invalidations.clear();
  }

  private arm(session: LimitedSession, delayMs: number): void {
    const host = this.host;
    // Decided after the input already due was read (clock.defer, B41): answers that came in while this
    // process was stalled past the deadline count.
    const expire = (): void => {
      if (session.invalidationTimer !== handle) return;
      session.invalidationTimer = null;
      if (!host.isCurrent(session)) return;
      const timeoutMs = host.limits.invalidationTimeoutMs;
      const check = checkInvalidations(session.invalidations, host.clock.now(), timeoutMs);
      if (check.kind === "none") return;
      if (check.kind === "wait") {
        this.arm(session, check.delayMs);
        return;
      }
      host.counters.invalidationTimeouts++;
      host.log(
        `client ${ridToHex(session.rid)} (${session.state.name}) has not answered the invalidation of key 0x${keyToHex(check.key)} ` +
          `for ${check.waitedMs} ms (limit ${timeoutMs} ms): treating it as vanished`,
        { level: "warn", rid: ridToHex(session.rid), key: keyToText(check.key) },
      );
      this.clear(session);
      host.stuck(session.rid);
    };
    const handle = setDeadline(host.clock, expire, delayMs);
    session.invalidationTimer = handle;
  }
}
