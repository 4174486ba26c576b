/**
 * The one place the simulator reaches into the production drivers' private parts (issue 10): mutations
 * (driver-mutations.ts), the protocol trace (drivers-trace.ts) and the quiet checks (drivers.ts) get a
 * LockServerRuntime's lock table, write-seq source, recovery tracker and session hooks through
 * `serverParts`, and a LockClient's lock machine, connection and idle-release hooks through `clientParts`.
 *
 * Guarantees: nothing here changes a driver; it only names, with types, fields and methods the drivers
 * already have. A wrapper installed on what these return replaces that part for that one instance.
 * Relies on: the private field and method names of runtime/server.ts, client/client.ts and
 * client/connection.ts. When those drivers offer an explicit seam (H1: a `LockServerRuntime.start` option
 * for sim wrappers; H5: LockClient in #private fields with a seam), these two functions are the only code
 * to change.
 */
import type { LockServerRuntime } from "../src/runtime/server.js";
import type { LockClient } from "../src/client/client.js";
import type { LockServer, LockServerEffect, WriteSeqSource } from "../src/core/lock-server.js";
import type { RecoveryTracker } from "../src/core/recovery.js";
import type { ClientLocks } from "../src/core/client-locks.js";
import type { WireSession } from "../src/protocol/session.js";
import type { Message } from "../src/protocol/messages.js";
import type { LockRequest } from "../src/core/lock-messages.js";
import type { Key } from "../src/core/keys.js";

/** What the simulator touches inside one LockServerRuntime (assignable members replace the instance's). */
export interface ServerParts {
  readonly locks: LockServer;
  readonly writeSeq: WriteSeqSource;
  readonly recovery: RecoveryTracker;
  /** Makes the session of a greeting that begins one (its `reliable` is the wire session). */
  newSession: (...args: unknown[]) => { reliable: WireSession };
  /** Answers a client's queued farewells once its lock recovery finished (B5). */
  runFarewell: (session: unknown) => void;
  /** Carries lock-table effects to the clients. */
  apply: (effects: LockServerEffect[]) => void;
}

export function serverParts(runtime: LockServerRuntime): ServerParts {
  return runtime as unknown as ServerParts;
}

/** What the simulator touches inside one LockClient. */
export interface ClientParts {
  readonly machine: ClientLocks;
  readonly connection: {
    readonly session: WireSession;
    readonly options: { onMessage: (message: Message) => void };
  };
  /** Runs the invalidation callbacks of an idle lock going to null, then sends its null request. */
  runIdleRelease: (request: LockRequest) => Promise<void>;
  sendLockRequest: (request: LockRequest) => void;
  readonly idleReleases: Map<Key, LockRequest>;
}

export function clientParts(client: LockClient): ClientParts {
  return client as unknown as ClientParts;
}
