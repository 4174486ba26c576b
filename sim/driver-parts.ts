/**
 * A client's parts as the simulator sees them (issue 10): its lock machine and its connection, recorded
 * through connectInWorld's seam (client.ts ClientParts) for mutations (driver-mutations.ts), the protocol
 * trace (drivers-trace.ts) and the quiet checks (drivers.ts). The server's parts come through its own seam
 * (runtime/server.ts ServerParts, built by driver-mutations.ts serverSeam). Nothing in sim/ reads a
 * driver's private fields.
 *
 * Guarantees: recording changes nothing; a wrapper installed on a recorded part replaces it for that one
 * instance. Relies on: the client's seam handing over its parts before it uses them.
 */
import type { ClientParts as ClientSeam, ConnectionParts } from "../src/client/client.js";
import type { ClientLocks } from "../src/core/client-locks.js";

/** What the simulator touches inside one LockClient: recorded through connectInWorld's seam (ClientParts). */
export interface ClientParts {
  readonly machine: ClientLocks;
  readonly connection: ConnectionParts;
}

/**
 * A client's parts as its seam hands them over: pass `seam` to connectInWorld; after it returns, `parts()`
 * has the client's machine and connection. `onLocks` runs inside the seam, before the client's first call
 * into its machine (the protocol trace is installed there, so it sees every call). `onRidChanged`: the
 * client drew another rid before its first greeting completed (ERIDTAKEN); the simulator's maps follow.
 */
export function recordClientParts(
  onLocks: (machine: ClientLocks) => void = () => {},
  onRidChanged: (rid: bigint) => void = () => {},
): { seam: ClientSeam; parts(): ClientParts } {
  let machine: ClientLocks | undefined;
  let connection: ConnectionParts | undefined;
  return {
    seam: {
      wrapLocks: (locks) => {
        machine = locks;
        onLocks(locks);
      },
      wrapConnection: (parts) => (connection = parts),
      ridChanged: onRidChanged,
    },
    parts: () => {
      if (machine === undefined || connection === undefined) throw new Error("the client did not hand over its parts through connectInWorld's seam");
      return { machine, connection };
    },
  };
}
