/**
 * Typed errors (DESIGN §6). Every failure a caller can see is a `KeylockError` with a stable `code`;
 * the core produces codes, the drivers wrap them. Bad input from a peer is a `ProtocolError`
 * (code EPROTO) naming what was wrong; it closes that peer's connection and nothing else.
 * Relies on: nothing.
 */

export const ERROR_CODES = [
  "EAGAIN", // nonblock acquire could not be granted right now
  "EABORTED", // the caller's AbortSignal fired before the grant
  "ESHUTDOWN", // the client is closing or closed
  "EFENCED", // the server forgot this client (it was fenced); its locks are gone
  "EPROTO", // a peer sent something malformed
  "EAUTH", // wrong cluster id or secret
  "EINVAL", // bad argument (mode, key, option)
  "ETIMEDOUT", // no leader found in time, or an operation ran out of time
  "ENOTLEADER", // the member asked is not the leader
  "ECONNECT", // could not reach any member
  "EINTERNAL", // an invariant broke; a bug
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export class KeylockError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(`${code}: ${message}`, options);
    this.name = "KeylockError";
    this.code = code;
  }
}

/** A peer broke the protocol: malformed frame, invalid field, response for an unknown lock. */
export class ProtocolError extends KeylockError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("EPROTO", message, options);
    this.name = "ProtocolError";
  }
}

/** A broken invariant: a bug, reported with its context instead of continuing in a bad state. */
export class InvariantError extends KeylockError {
  constructor(message: string) {
    super("EINTERNAL", message);
    this.name = "InvariantError";
  }
}

export function invariant(condition: unknown, message: string | (() => string)): asserts condition {
  if (!condition) throw new InvariantError(typeof message === "string" ? message : message());
}
