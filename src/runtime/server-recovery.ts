/**
 * Lock recovery on the wire (reference §5.4), for the lock server driver (runtime/server.ts): asking a
 * client for its locks batch by batch (LOCK_RECOVER, `after` the last key reported), and taking its
 * answers into the lock table. The server machine decides who must report (`awaitsLocks`) and when
 * recovery is over; the lock table checks every report.
 *
 * Guarantees:
 * - A batch nobody asked for, or of more than RECOVER_BATCH_LOCKS_MAX locks, is a protocol error for that
 *   client's connection; a batch that would take the client past `clientLocksMax` entries is a client
 *   limit violation (runtime/server-limits.ts). Neither touches the table.
 * - An empty batch ends that client's recovery (`locks-recovered` to the machine), and so does any batch
 *   of a leaving client: its locks are moot (below).
 * - A batch the table refuses is refused whole (nothing recovered, its protocol error closes the
 *   connection) and no further batch is asked for, so the recovery deadline fences and reclaims that
 *   client like any that does not recover (or the reconnect timeout, if it stays away).
 * - A batch that refutes other clients' reports (the table's `refuted` effects: a verified later grant
 *   proves them stale or forged) has those clients' connections closed and fences them (the driver).
 * - Otherwise the next batch is asked for, after the last key of this one.
 * - When every client recovered (`finished`), the lock table resumes granting (write grants wait if the
 *   recovered write seqs outran the reserved block) and recovery's duration is observed in metrics.
 * Relies on: an honest client answering with its locks strictly after `after`, in key order
 * (core/client-locks.ts `recoverBatch`), so the batches end; the lock table checking every report and
 * being held for recovery while any client still reports (the machine's `hold-locks`).
 */
import { performance } from "node:perf_hooks";
import type { Key } from "../core/keys.js";
import type { LockServer, LockServerEffect } from "../core/lock-server.js";
import { RECOVER_BATCH_LOCKS_MAX, type Rid } from "../core/lock-messages.js";
import type { ServerLimits } from "../core/limits.js";
import type { ServerInput, ServerMachine } from "../core/server-machine.js";
import { Command, type Body } from "../protocol/messages.js";
import type { Logger } from "../io/log.js";
import type { Metrics } from "./metrics.js";

/** What a recovery batch may come from (runtime/server.ts ClientSession). */
export interface RecoveringSession {
  readonly rid: Rid;
  readonly state: { readonly leaving: boolean };
}

export interface RecoveryHost<S extends RecoveringSession> {
  readonly term: bigint;
  /** performance.now() when the server was made: recovery's duration is measured from it. */
  readonly startedAtMs: number;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly machine: ServerMachine;
  readonly locks: LockServer;
  readonly limits: ServerLimits;
  isStopping(): boolean;
  input(input: ServerInput): void;
  /** Carries the lock table's effects to the clients. */
  carry(effects: LockServerEffect[]): void;
  /** Sends a request on the session. */
  request(session: S, cmd: Command, payload: Body): void;
  protocolError(session: S, reason: string): void;
  clientLimitViolation(session: S, what: string): void;
}

/** Asks for and takes in the clients' lock reports. */
export class LockRecovery<S extends RecoveringSession> {
  constructor(private readonly host: RecoveryHost<S>) {}

  /** Asks the session for its next batch of locks, after `after` (null: from the start). */
  request(session: S, after: Key | null): void {
    this.host.request(session, Command.LOCK_RECOVER, { kind: "recover-request", body: { after } });
  }

  /** A batch of the session's locks came in. */
  onResponse(session: S, locks: readonly { key: Key; mode: string; writeSeq: bigint }[]): void {
    const host = this.host;
    if (!host.machine.awaitsLocks(session.rid)) {
      host.protocolError(session, "a lock recovery batch nobody asked for");
      return;
    }
    if (locks.length === 0 || session.state.leaving) {
      // A leaving client (it greeted with its farewell, resent after a server died) reports locks that are
      // moot, as all its lock traffic is: the server that got its farewell may already have given them to
      // others before dying, so recovering them would be refused as conflicts and fence an honest client
      // (found by the simulator over the real drivers, sim/drivers.ts). Its recovery ends here, empty.
      host.input({ type: "locks-recovered", rid: session.rid });
      return;
    }
    const entries = host.locks.clientLoad(session.rid).entries;
    if (entries + locks.length > host.limits.clientLocksMax) {
      host.clientLimitViolation(session, `reported ${entries + locks.length} locks in recovery (at most ${host.limits.clientLocksMax} per client)`);
      return;
    }
    if (locks.length > RECOVER_BATCH_LOCKS_MAX) {
      host.protocolError(session, `a recovery batch of ${locks.length} locks (at most ${RECOVER_BATCH_LOCKS_MAX})`);
      return;
    }
    const batch = locks as Parameters<LockServer["onRecoverBatch"]>[1];
    const effects = host.locks.onRecoverBatch(session.rid, batch);
    // Other clients' reports this batch refuted (their connections close, they are fenced), and this
    // batch's own refusal, if any.
    if (effects.length > 0) host.carry(effects);
    // Refused whole (nothing recovered): the connection closes and no further batch is asked for, so
    // this client's recovery never finishes; the recovery deadline fences and reclaims it like any
    // client that does not recover (or the reconnect timeout, if it stays away).
    if (effects.some((effect) => effect.type === "protocol-error")) return;
    this.request(session, locks[locks.length - 1]!.key);
  }

  /** Every client recovered (the machine's `resume-locks`): the lock table grants again. */
  finished(): void {
    const host = this.host;
    host.log(`term ${host.term}: all clients recovered`);
    if (host.machine.recoveryTotal > 0) host.metrics.recoveryDuration.observe((performance.now() - host.startedAtMs) / 1000);
    // Recovered write seqs may have raised the counter above the reserved block: the lock table then
    // finds no token available, so write grants wait for the reservation that observe() started.
    if (!host.isStopping()) host.carry(host.locks.resumeAfterRecovery());
  }
}
