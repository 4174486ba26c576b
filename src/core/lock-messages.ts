/**
 * The lock messages exchanged between the client lock manager and the server lock table, as the core
 * sees them (reference §3.12). The protocol layer carries these on the wire; the simulator carries them
 * in memory. Every message names old and new mode; the server only interprets `newMode` of what it
 * receives, the client uses `oldMode` for assertions and cache decisions.
 * Relies on: the session layer to deliver messages of one connection in order, exactly once per server.
 */
import type { Key } from "./keys.js";
import type { LockMode } from "./modes.js";
import { RECOVER_BATCH_LOCKS_MAX } from "./limits.js";
export { RECOVER_BATCH_LOCKS_MAX };

/** A client's 64-bit random id, never 0 or 2^64-1. */
export type Rid = bigint;

/** Client → server: acquire (or shrink, when newMode is null). `noQueue` = nonblock (DESIGN §4). */
export interface LockRequest {
  readonly key: Key;
  readonly oldMode: LockMode;
  readonly newMode: LockMode;
  readonly noQueue: boolean;
}

/** Server → client, in answer to a LockRequest. */
export interface LockGrant {
  readonly key: Key;
  readonly oldMode: LockMode;
  readonly newMode: LockMode;
  /** Fencing token for write and write_only grants; 0n for read and null. */
  readonly writeSeq: bigint;
  /**
   * The grant's proof for recovery (core/grant-tags.ts): the granting server's term, the grant's number
   * among that server's grants (from 1) and its tag. All three 0 for a null grant.
   */
  readonly grantTerm: bigint;
  readonly grantNo: number;
  readonly grantTag: number;
}

/** Server → client request: downgrade your grant on `key` from oldMode to newMode. */
export interface LockInvalidation {
  readonly key: Key;
  readonly oldMode: LockMode;
  readonly newMode: LockMode;
}

/**
 * One lock a client reports during recovery (reference §4.9): the mode it held before any in-progress
 * invalidation, and the proof of its latest grant on the key (LockGrant's grantTerm, grantNo, grantTag;
 * all three 0 for a null report).
 */
export interface RecoveredLock {
  readonly key: Key;
  readonly mode: LockMode;
  readonly writeSeq: bigint;
  readonly grantTerm: bigint;
  readonly grantNo: number;
  readonly grantTag: number;
}

