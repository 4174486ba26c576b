/**
 * How a lock server is started (runtime/server.ts `LockServerRuntime.start`): its options, and the seam
 * through which the driver simulator observes and wraps its real parts (`ServerParts`).
 *
 * Guarantees: types only; production passes no `parts`, and then every part is the real one unwrapped.
 * Relies on: runtime/server.ts calling each `parts` hook once per part, as it is made, and using whatever
 * a wrapping hook returns.
 */
import type { LockServer, LockServerEffect, WriteSeqSource } from "../core/lock-server.js";
import type { RecoveryTracker } from "../core/recovery.js";
import type { ServerMachine } from "../core/server-machine.js";
import type { ServerLimits } from "../core/limits.js";
import type { WireSession } from "../protocol/session.js";
import type { AdminMember } from "../protocol/admin.js";
import type { Clock } from "../io/world.js";
import type { FenceAgent } from "../io/fence.js";
import type { Logger } from "../io/log.js";
import type { ClusterConfig, Store } from "../store/store.js";
import type { Metrics } from "./metrics.js";

export interface ServerOptions {
  store: Store;
  config: ClusterConfig;
  /** The slot this server runs in, and its election term (the server's identity, B22). */
  slot: number;
  term: bigint;
  host: string;
  port: number;
  reconnectTimeoutMs?: number;
  recoveryTimeoutMs?: number;
  /** Fences clients that miss recovery or do not reconnect (default: the local agent). */
  fenceAgent?: FenceAgent;
  fenceTimeoutMs?: number;
  log: Logger;
  /** Called once when the server cannot go on (fence failure, store failure); the owner stops it. */
  onFatal?: (reason: string) => void;
  /** Extra status the member layer adds (members, roles). */
  describeMembers?: () => AdminMember[];
  /** Bounds on what peers may make this server hold (core/limits.ts); unset ones take their defaults. */
  limits?: Partial<ServerLimits>;
  /** Write seqs reserved per store write (default SEQ_RESERVE_BLOCK; tests use a small block to exhaust it). */
  writeSeqBlock?: bigint;
  /** Where this server counts (its member's, so counters outlive terms); default: its own. */
  metrics?: Metrics;
  /** Time and timers (io/world.ts); the real clock unless simulated. */
  clock?: Clock;
  /**
   * deriveKey(secret, clusterId, "keylock greeting v2") (io/keys.ts): required exactly when the cluster has a
   * secret (config.secretDigest); greeting proofs both ways are made with it (io/greeting-proofs.ts).
   */
  greetingKey?: Buffer | null;
  /** For the driver simulator only: hooks that observe and wrap the server's parts (ServerParts). */
  parts?: ServerParts;
}

/**
 * The seam through which the driver simulator (sim/drivers.ts, sim/drivers-trace.ts) observes and wraps
 * the server's real parts, for traces and mutations; production passes nothing. Each hook is called once
 * per part as it is made, and whatever it wraps is what the server then uses.
 */
export interface ServerParts {
  /** Wraps the write-seq source the lock table draws fencing tokens from (the reservation stays underneath). */
  wrapWriteSeq?(source: WriteSeqSource): WriteSeqSource;
  /** Sees the recovery tracker the server machine will use, before start (to wrap its methods). */
  recovery?(tracker: RecoveryTracker): void;
  /** Sees the lock table once the server started (recovery hold in place), before any client is served. */
  lockServer?(locks: LockServer): void;
  /** Sees the reliable session of each client session the server begins. */
  session?(reliable: WireSession): void;
  /** Sees the server machine before start (to wrap its `input`). */
  machine?(machine: ServerMachine): void;
  /**
   * Wraps the function that carries the lock table's effects to the clients (grants, invalidations,
   * refusals): the runtime calls what this returns for every batch of effects.
   */
  wrapLockEffects?(carry: (effects: LockServerEffect[]) => void): (effects: LockServerEffect[]) => void;
}
