/**
 * keylock wire messages (docs/protocol.md is the complete description). Every frame carries a header
 * (seq, ack, id, cmd, response flag, error) and a command-specific body. Requests and responses share
 * a command number; a response repeats its request's id. The codec (codec.ts) validates every field on
 * decode and turns anything malformed into a ProtocolError.
 * Relies on: core types only (keys are core `Key` binary strings, rids are bigint).
 */
import type { Key } from "../core/keys.js";
import type { LockMode } from "../core/modes.js";
import type { RecoveredLock } from "../core/lock-messages.js";
// The wire bounds are defined in core/limits.ts; importers of the protocol find them here too.
export {
  FRAME_BYTES_MAX,
  SEQ_MAX,
  CLUSTER_ID_BYTES_MAX,
  CLIENT_NAME_BYTES_MAX,
  PROOF_BYTES_MAX,
  ERROR_MESSAGE_BYTES_MAX,
  ADDRESS_BYTES_MAX,
  SLOT_MAX,
  ADMIN_PAGE_ROWS_MAX,
} from "../core/limits.js";

/**
 * Version 3: every non-null grant carries its proof for recovery (LOCK grantTerm, grantNo, grantTag;
 * recovery entries report it). Version 2 brought the challenge–response greeting (HELLO, then GREETING
 * with proofs). docs/protocol.md.
 */
export const PROTOCOL_VERSION = 3;

export const Command = {
  GREETING: 0,
  LOCK: 1,
  LOCK_RECOVER: 2,
  FAREWELL: 3,
  ADMIN_STATUS: 4,
  ADMIN_LOCKS: 5,
  ADMIN_STATS: 6,
  /** The first request on every connection (since version 2): the client's nonce; the answer, the server's. */
  HELLO: 7,
} as const;
export type Command = (typeof Command)[keyof typeof Command];

/** Error codes carried in a response header; a response with an error has an error body. */
export const WireError = {
  NONE: 0,
  EAGAIN: 1, // nonblock lock request could not be granted now
  EINVAL: 2, // the request was invalid (bad mode, bad key)
  EPROTO: 3, // malformed message; the connection is closed after this response
  EAUTH: 4, // wrong cluster id, protocol version or secret proof
  ENOTLEADER: 5, // this member does not run the lock server; body may name the leader
  EFENCED: 6, // the server forgot this client (it timed out and was fenced)
  ESHUTDOWN: 7, // the server is stopping
  ERIDTAKEN: 8, // a first greeting's rid is another client's (recorded with another claim): pick another rid
} as const;
export type WireError = (typeof WireError)[keyof typeof WireError];

export interface Header {
  /** Per-connection send sequence, starting at 1; never 0. */
  readonly seq: number;
  /** The sender's last received seq (acknowledges the peer's messages up to it); 0 = none yet. */
  readonly ack: number;
  /** Request id (per-connection counter from 1); a response repeats its request's. Never 0. */
  readonly id: number;
  readonly cmd: Command;
  readonly response: boolean;
  readonly error: WireError;
}

export interface GreetingRequest {
  readonly clusterId: string;
  readonly protocolVersion: number;
  readonly rid: bigint;
  /** The term of the last server this client greeted successfully; 0n before any. */
  readonly lastServerTerm: bigint;
  readonly farewell: boolean;
  readonly name: string;
  readonly pid: number;
  /**
   * The cluster proof (io/greeting-proofs.ts): HMAC-SHA256 over the transcript, 32 bytes, when the
   * cluster has a secret; empty otherwise.
   */
  readonly proof: Uint8Array;
  /** An admin connection (CLI queries): the server keeps no client record and grants no locks on it. */
  readonly admin: boolean;
  /** The Ed25519 public key (32 bytes) of the claim seed, while the client holds no resumption secret; else empty. */
  readonly claimKey: Uint8Array;
  /** The identity proof: Ed25519 signature (64 bytes) by the resumption secret or the claim seed; empty for admin. */
  readonly identityProof: Uint8Array;
}

export interface GreetingResponse {
  readonly clusterId: string;
  readonly protocolVersion: number;
  readonly serverTerm: bigint;
  readonly rid: bigint;
  /** The server's cluster proof (32 bytes) when the cluster has a secret; empty otherwise. */
  readonly proof: Uint8Array;
  /** A new resumption secret (32 bytes, wrapped when the cluster has a secret) for a fresh client; else empty. */
  readonly resumeSecret: Uint8Array;
}

/** HELLO request: the client's protocol version and a fresh 32-byte nonce. */
export interface HelloRequest {
  readonly protocolVersion: number;
  readonly nonce: Uint8Array;
}

/** HELLO response: the cluster id, the server's protocol version and its fresh 32-byte nonce. */
export interface HelloResponse {
  readonly clusterId: string;
  readonly protocolVersion: number;
  readonly nonce: Uint8Array;
}

export interface LockMessageBody {
  readonly key: Key;
  readonly oldMode: LockMode;
  readonly newMode: LockMode;
  readonly writeSeq: bigint;
  /** Only meaningful in a client's lock request: nonblock (answer EAGAIN instead of queueing). */
  readonly noQueue: boolean;
  /** Only in a grant of a non-null mode (core/lock-messages.ts LockGrant): its proof for recovery; else all 0. */
  readonly grantTerm: bigint;
  readonly grantNo: number;
  readonly grantTag: number;
}

/** Server → client: report your locks with keys strictly after `after` (null = from the start). */
export interface RecoverRequest {
  readonly after: Key | null;
}

/** Client → server: up to RECOVER_BATCH_LOCKS_MAX locks in key order; an empty batch means done. */
export interface RecoverResponse {
  readonly locks: readonly RecoveredLock[];
}

/** Admin queries page through large results: `after` is the last key already seen. */
export interface AdminPageRequest {
  readonly after: Key | null;
  readonly limit: number;
}

export interface ErrorBody {
  readonly message: string;
  /** ENOTLEADER only: the leader's slot and address when the member knows them. */
  readonly leader?: { readonly slot: number; readonly address: string };
}

/** The admin bodies are plain data (strings, numbers, booleans, arrays, maps) described in docs/protocol.md. */
export type AdminBody = unknown;

export type Body =
  | { readonly kind: "greeting-request"; readonly body: GreetingRequest }
  | { readonly kind: "greeting-response"; readonly body: GreetingResponse }
  | { readonly kind: "hello-request"; readonly body: HelloRequest }
  | { readonly kind: "hello-response"; readonly body: HelloResponse }
  | { readonly kind: "lock"; readonly body: LockMessageBody }
  | { readonly kind: "recover-request"; readonly body: RecoverRequest }
  | { readonly kind: "recover-response"; readonly body: RecoverResponse }
  | { readonly kind: "farewell"; readonly body: Record<string, never> }
  | { readonly kind: "admin-request"; readonly body: AdminPageRequest }
  | { readonly kind: "admin-response"; readonly body: AdminBody }
  | { readonly kind: "error"; readonly body: ErrorBody };

export interface Message {
  readonly header: Header;
  readonly payload: Body;
}
