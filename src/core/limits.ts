/**
 * Every bound that protects a member from its peers (DESIGN §5 "every bound is explicit", §9 "limits"),
 * in one place, with its unit last in the name. Defaults live here; the CLI flags that tune them
 * (`cli/options.ts`) and docs/operations.md ("Threats and limits") quote these values.
 *
 * Guarantees: pure constants and one pure resolver, importable from every layer (core included).
 * Relies on: nothing.
 */

/** Terms above this are never adopted, persisted or computed: `term + 1` can never overflow a u64 or a PostgreSQL bigint. */
/** The largest unsigned 64-bit integer: the wire's uint64 and the stores' bound. */
export const U64_MAX = (1n << 64n) - 1n;
export const TERM_MAX = (1n << 62n) - 1n;
/**
 * A quorum datagram whose term is more than this far above the greatest term this member knows is dropped:
 * a forged term cannot push the cluster to TERM_MAX in a few datagrams. Honest terms grow by one per
 * election (≥ 2 s apart), so a running member never legitimately falls this far behind; a member that
 * restarts reads the greatest recorded term from the store first.
 */
export const TERM_JUMP_MAX = 1n << 20n;
/** Fencing tokens (write seqs) above this are never adopted from a peer nor reserved. */
export const WRITE_SEQ_MAX = (1n << 62n) - 1n;

/** Limits of one lock server (one member while it leads); each has a member flag. */
export interface ServerLimits {
  /** Open TCP connections (clients, admin and not yet greeted) per member; more are closed at once. */
  connectionsMax: number;
  /** A connection that has not completed its greeting in this time is closed. */
  greetingTimeoutMs: number;
  /** Lock requests one client may have waiting for an answer; one more is a protocol error. */
  clientRequestsMax: number;
  /** Lock entries (granted, requested or invalidated keys) one client may hold; one more is a protocol error. */
  clientLocksMax: number;
  /** Messages a session may keep unacknowledged (ours waiting for ack or answer); beyond it the client is fenced and reclaimed. */
  sessionUnackedMax: number;
  /** A client that has not answered an invalidation in this time is fenced and reclaimed (0 = never). */
  invalidationTimeoutMs: number;
  /** A leader whose store has not answered for this long resigns so another member can serve. */
  storeUnreachableMs: number;
}

export const SERVER_LIMITS_DEFAULT: Readonly<ServerLimits> = {
  connectionsMax: 10_000,
  greetingTimeoutMs: 10_000,
  clientRequestsMax: 100_000,
  clientLocksMax: 1_000_000,
  sessionUnackedMax: 200_000,
  invalidationTimeoutMs: 60_000,
  storeUnreachableMs: 15_000,
};

/** The flag, range and default of each server limit (the CLI validates against these). */
export const SERVER_LIMIT_FLAGS: Readonly<
  Record<keyof ServerLimits, { flag: string; min: number; max: number }>
> = {
  connectionsMax: { flag: "--max-connections", min: 1, max: 1_000_000 },
  greetingTimeoutMs: { flag: "--greeting-timeout-ms", min: 100, max: 600_000 },
  clientRequestsMax: { flag: "--max-client-requests", min: 1, max: 10_000_000 },
  clientLocksMax: { flag: "--max-client-locks", min: 1, max: 100_000_000 },
  sessionUnackedMax: { flag: "--max-session-unacked", min: 16, max: 100_000_000 },
  invalidationTimeoutMs: { flag: "--invalidation-timeout-ms", min: 0, max: 3_600_000 },
  storeUnreachableMs: { flag: "--store-unreachable-ms", min: 1_000, max: 600_000 },
};

export function serverLimits(overrides: Partial<ServerLimits> = {}): ServerLimits {
  const out: ServerLimits = { ...SERVER_LIMITS_DEFAULT };
  for (const name of Object.keys(overrides) as (keyof ServerLimits)[]) {
    const value = overrides[name];
    if (value !== undefined) out[name] = value;
  }
  return out;
}

/**
 * A session that continues a dropped predecessor (the server's "farewell-retry", core/session.ts) numbers
 * after the peer's ack only while that ack is at most this: at least 2^52 seqs remain after it, so a
 * forged ack can never exhaust the session's seqs. Honest sessions never come near it.
 */
export const SESSION_ADOPTED_ACK_MAX = 2 ** 52;
/** `status` lists at most this many clients (lowest rids first) and fences (oldest first); `clientsTotal`/`fencesTotal` count all (docs/protocol.md). */
export const STATUS_CLIENTS_MAX = 1000;
export const STATUS_FENCES_MAX = 1000;
/** Log lines about refused or timed-out connections: at most one per this interval (the rest are counted). */
export const CONNECTION_LOG_INTERVAL_MS = 1000;
/**
 * How long a server looks for the process that owns a greeting client's connection (io/peer-process.ts)
 * before giving up on it; the greeting waits for the answer, so this stays well under the greeting deadline.
 */
export const PEER_PROCESS_LOOKUP_MS_MAX = 2_000;

// ---------------------------------------------------------------------------------------------------
// Wire and table bounds (docs/protocol.md "Limits"); the modules that enforce them re-export them.

/** Largest frame body (after the 4-byte length prefix). */
export const FRAME_BYTES_MAX = 1024 * 1024;
/** Largest seq, ack and id: 2^53-1, so they stay exact JavaScript numbers. */
export const SEQ_MAX = Number.MAX_SAFE_INTEGER;
export const CLUSTER_ID_BYTES_MAX = 256;
/** A client's display name (UTF-8 bytes). */
export const CLIENT_NAME_BYTES_MAX = 256;
export const PROOF_BYTES_MAX = 64;
export const ERROR_MESSAGE_BYTES_MAX = 4096;
/** A member address "HOST:PORT" or "[V6]:PORT" in an ENOTLEADER error body (UTF-8 bytes). */
export const ADDRESS_BYTES_MAX = 256;
/** Deepest nesting of arrays and maps in a body (the body array itself is level 1). */
export const NESTING_DEPTH_MAX = 32;
/** A key: at most this many bytes. */
export const KEY_BYTES_MAX = 1024;
/**
 * Most locks one recovery batch carries (DESIGN §4: up to 1000 per message). 960, not 1000, since grant
 * proofs (protocol version 3): a batch of maximal entries (1024-byte keys, every integer 9 bytes) must fit
 * in one frame, and at most 984 do (docs/protocol.md §4.5; test/unit/codec.test.ts "limits").
 */
export const RECOVER_BATCH_LOCKS_MAX = 960;
/** Most rows an admin page request may ask for (`limit` is 1..ADMIN_PAGE_ROWS_MAX). */
export const ADMIN_PAGE_ROWS_MAX = 1000;
/** An admin page stays well under the 1 MiB frame limit whatever the key sizes. */
export const ADMIN_PAGE_BYTES_MAX = 512 * 1024;
/** Bytes queued for one socket beyond which the connection is closed (a peer that stops reading). */
export const SEND_QUEUE_BYTES_MAX = 64 * 1024 * 1024;

/**
 * Quorum slots: 1..SLOTS_MAX members, numbered 0..SLOT_MAX. The only definition: the election, the store,
 * the quorum datagrams, the wire (ENOTLEADER's leader slot), the CLI and the simulators all use these two.
 */
export const SLOTS_MAX = 15;
export const SLOT_MAX = SLOTS_MAX - 1;
/** Text fields of a client record (name, address, hostname) are bounded so a record stays small. */
export const CLIENT_TEXT_CHARS_MAX = 1024;
/** A TCP port in a cluster config or a flag; 65535 is refused like the reference does (§7.1): it is reserved as "no port" in some stacks. */
export const PORT_MIN = 1;
export const PORT_MAX = 65534;
export const CLUSTER_ID_CHARS_MAX = 256;
export const HOST_CHARS_MAX = 253;
/** Pids are positive 32-bit signed integers on every system keylock runs on. */
export const PID_MAX = 0x7fffffff;

export const HEARTBEAT_TIMEOUT_MS_DEFAULT = 10_000;
export const HEARTBEAT_TIMEOUT_MS_MIN = 2_000;
export const HEARTBEAT_TIMEOUT_MS_MAX = 60_000;
/** Every recorded client must greet and recover its locks within this after a server starts, or it is fenced. */
export const RECOVERY_TIMEOUT_MS_DEFAULT = 30_000;
/** A disconnected client's session waits this long for it to reconnect, then the client is fenced. */
export const RECONNECT_TIMEOUT_MS_DEFAULT = 20_000;
/** The range of `--recovery-timeout-ms` and `--reconnect-timeout-ms`. */
export const CLIENT_TIMEOUT_MS_MIN = 100;
export const CLIENT_TIMEOUT_MS_MAX = 3_600_000;
/** A fence agent that has not answered in this time has failed (its command's process group is killed). */
export const FENCE_TIMEOUT_MS = 30_000;
/** Write seqs reserved per store write (tests inject a small block through ServerOptions.writeSeqBlock). */
export const SEQ_RESERVE_BLOCK = 1_000_000n;
