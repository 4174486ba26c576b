/**
 * The one place the simulator reaches into the production drivers' private parts (issue 10): mutations
 * (driver-mutations.ts), the protocol trace (drivers-trace.ts) and the quiet checks (drivers.ts) get a
 * LockServerRuntime's lock table, write-seq source, recovery tracker and session hooks through
 * `serverParts`, and a LockClient's lock machine and connection through its seam (`recordClientParts`, over
 * connectInWorld's ClientParts; LockClient keeps everything else in #private fields).
 *
 * Guarantees: nothing here changes a driver; it only names, with types, fields and methods the drivers
 * already have. A wrapper installed on what these return replaces that part for that one instance.
 * Relies on: the private field and method names of runtime/server.ts, and the client's seam
 * (client/client.ts ClientParts) handing over its parts before it uses them.
 */
import type { LockServerRuntime } from "../src/runtime/server.js";
import type { ClientParts as ClientSeam, ConnectionParts } from "../src/client/client.js";
import type { LockServer, LockServerEffect, WriteSeqSource } from "../src/core/lock-server.js";
import type { RecoveryTracker } from "../src/core/recovery.js";
import type { ClientLocks } from "../src/core/client-locks.js";
import type { WireSession } from "../src/protocol/session.js";

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

/** What the simulator touches inside one LockClient: recorded through connectInWorld's seam (ClientParts). */
export interface ClientParts {
  readonly machine: ClientLocks;
  readonly connection: ConnectionParts;
}

/**
 * A client's parts as its seam hands them over: pass `seam` to connectInWorld; after it returns, `parts()`
 * has the client's machine and connection. `onLocks` runs inside the seam, before the client's first call
 * into its machine (the protocol trace is installed there, so it sees every call).
 */
export function recordClientParts(onLocks: (machine: ClientLocks) => void = () => {}): { seam: ClientSeam; parts(): ClientParts } {
  let machine: ClientLocks | undefined;
  let connection: ConnectionParts | undefined;
  return {
    seam: {
      wrapLocks: (locks) => {
        machine = locks;
        onLocks(locks);
      },
      wrapConnection: (parts) => (connection = parts),
    },
    parts: () => {
      if (machine === undefined || connection === undefined) throw new Error("the client did not hand over its parts through connectInWorld's seam");
      return { machine, connection };
    },
  };
}
