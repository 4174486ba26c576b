/**
 * Lock modes and the three relations every other machine is built on (reference §2, DESIGN §3–§4).
 *
 * Guarantees:
 * - `compatible(granted, requested, sameClient)` is exactly the server table of reference §2.2: equal
 *   shareable modes (read, write_only) are compatible on any clients; a client's own read is compatible
 *   with its own write request (in-place upgrade); null is compatible with anything on another client
 *   and with nothing on the same client (how shrink requests resolve races, regression B2).
 * - `invalidationMode(granted, requested)` is the target a conflicting holder is asked to downgrade to:
 *   read for write-held vs read-requested (the holder keeps its cache), null otherwise (§2.3).
 * - `satisfies(granted, wanted)`: a cached grant can serve a local user without a round trip (§2.4).
 * - `handlesShare(held, wanted)`: keylock's local rule (DESIGN §4): handles inside one client follow the
 *   cross-client rules, so two write handles never coexist, even in one process.
 * Relies on: nothing; every relation is a table, and the tests walk every cell.
 */

export type LockMode = "null" | "read" | "write" | "write_only";

/** In wire-code order: null=0, read=1, write=2, write_only=3 (reference §2; ≥4 is invalid). */
export const LOCK_MODES: readonly LockMode[] = ["null", "read", "write", "write_only"];

export const MODE_CODE: Readonly<Record<LockMode, number>> = { null: 0, read: 1, write: 2, write_only: 3 };

/**
 * MODE_CODE of `mode`, or -1 when it is not a mode name: one switch, monomorphic, for the paths that run
 * per message or per recovered lock (the codec's fast paths, the lock table's recovery).
 */
export function modeCode(mode: unknown): number {
  switch (mode) {
    case "null":
      return 0;
    case "read":
      return 1;
    case "write":
      return 2;
    case "write_only":
      return 3;
    default:
      return -1;
  }
}

export function isLockMode(value: unknown): value is LockMode {
  return typeof value === "string" && (LOCK_MODES as readonly string[]).includes(value);
}

/** The mode for a wire code, or undefined when the code is not a mode (≥ 4, negative, not an integer). */
export function modeFromCode(code: number): LockMode | undefined {
  return Number.isInteger(code) ? LOCK_MODES[code] : undefined;
}

type ModeTable = Readonly<Record<LockMode, Readonly<Record<LockMode, boolean>>>>;

/** Granted entry (row) on client X vs requested entry (column) on client Y ≠ X (reference §2.2). */
const COMPATIBLE_ACROSS_CLIENTS: ModeTable = {
  null: { null: true, read: true, write: true, write_only: true },
  read: { null: true, read: true, write: false, write_only: false },
  write: { null: true, read: false, write: false, write_only: false },
  write_only: { null: true, read: false, write: false, write_only: true },
};

/** Granted entry (row) vs a request (column) from the same client (reference §2.2). */
const COMPATIBLE_SAME_CLIENT: ModeTable = {
  null: { null: false, read: false, write: false, write_only: false },
  read: { null: false, read: true, write: true, write_only: false },
  write: { null: false, read: false, write: false, write_only: false },
  write_only: { null: false, read: false, write: false, write_only: true },
};

/** Granted (row) serves a local user wanting (column) without asking the server (reference §2.4). */
const SATISFIES: ModeTable = {
  null: { null: true, read: false, write: false, write_only: false },
  read: { null: true, read: true, write: false, write_only: false },
  write: { null: true, read: true, write: true, write_only: false },
  write_only: { null: true, read: false, write: false, write_only: true },
};

/** Two handles on one key may coexist (DESIGN §4): read with read, write_only with write_only. */
const HANDLES_SHARE: ModeTable = {
  null: { null: true, read: true, write: true, write_only: true },
  read: { null: true, read: true, write: false, write_only: false },
  write: { null: true, read: false, write: false, write_only: false },
  write_only: { null: true, read: false, write: false, write_only: true },
};

export function compatible(granted: LockMode, requested: LockMode, sameClient: boolean): boolean {
  return (sameClient ? COMPATIBLE_SAME_CLIENT : COMPATIBLE_ACROSS_CLIENTS)[granted][requested];
}

export function invalidationMode(granted: LockMode, requested: LockMode): LockMode {
  return granted === "write" && requested === "read" ? "read" : "null";
}

/** Whether a grant of `granted` serves a user wanting `wanted`. Every grant serves "nothing" (null). */
export function satisfies(granted: LockMode, wanted: LockMode): boolean {
  return SATISFIES[granted][wanted];
}

export function handlesShare(held: LockMode, wanted: LockMode): boolean {
  return HANDLES_SHARE[held][wanted];
}

export function canRead(mode: LockMode): boolean {
  return mode === "read" || mode === "write";
}

export function canWrite(mode: LockMode): boolean {
  return mode === "write" || mode === "write_only";
}

/** write and write_only grants carry a fencing token (writeSeq); read and null grants carry 0. */
export function carriesWriteSeq(mode: LockMode): boolean {
  return canWrite(mode);
}
