/**
 * The store (DESIGN §2, §4): the durable state the members of one cluster share — the cluster config,
 * the quorum slot events, the mounted-client records and the seq high-water mark. Three engines
 * implement the same `Store` interface and pass the same conformance suite (test/store/conformance.ts):
 * SQLite (sqlite.ts, the embedded default, one machine), PostgreSQL (postgres.ts, several machines) and
 * memory (memory.ts, the simulator and unit tests).
 *
 * Guarantees every engine gives:
 * - A call that resolves has made its change durable (it survives a crash of this process and is seen
 *   by every other instance opened on the same store). A call rejected with EEXIST, EINVAL or
 *   ENOTFORMATTED changed nothing; after EIO the outcome is unknown (a commit may have been lost in
 *   flight), which is why EIO is fatal to the caller's role rather than retried blindly.
 * - `format` happens once: a second format — from any instance, even a concurrent one — rejects with
 *   `EEXIST` and leaves the first config in place. A config is validated before anything is written.
 * - An unformatted store reads as empty (no config, high-water 0, no clients, no slot events); every
 *   write other than `format` rejects with `ENOTFORMATTED` (a member started on an unformatted store is
 *   a setup mistake, not something to paper over).
 * - The seq high-water mark never goes down (reference §3.6: every write_seq handed out is ≤ it).
 * - Client records: insert of an existing rid succeeds and keeps the first record (reference §6.6 step
 *   2, regression B21: a resent first greeting must not fail); delete of an absent rid succeeds.
 *   Concurrent inserts and deletes are never lost (B25). `listClients` is ordered by unsigned rid.
 * - Slot events (reference §7.3): a write changes one event of one slot and nothing else (B43); every
 *   write to a slot increments that slot's write number and stamps it on the event, as the quorum
 *   block's write_nr. Writes to one slot are serialized across instances, so write numbers are distinct.
 * - `writeElect` (DESIGN §4, last row) checks "no slot has any event with a higher term" and writes the
 *   ELECT event atomically with respect to every other slot write: it either sees a higher term and
 *   writes nothing, or it writes while no higher term exists.
 * - Process records (DESIGN §9 "Fencing"): a client record's `pid`/`pidStart` and a slot event's optional
 *   `pid`/`pidStart` name a process a member found itself (the owner of the client's connection, the
 *   member process that wrote the event), never a pid a peer named; they come together or not at all
 *   (pid 0 and "" in a client record: none found). Stores written by schema version 1 open and are
 *   migrated: their client pids came from the clients' own greetings, so they are dropped (0 / "").
 * - bigints (rid, term, seq) are unsigned 64-bit; values outside 0..2^64-1 are refused with `EINVAL`
 *   and every accepted value round-trips exactly. Each engine documents its encoding. Slot event terms
 *   are further bounded by TERM_MAX (core/limits.ts): a write above it is refused with `EINVAL` naming
 *   TERM_MAX, so no term a store accepts can overflow `term + 1`. Reads return whatever is recorded
 *   (a store written before the bound may hold more; the member names such records, `outOfRangeTerms`).
 * - Engine failures surface as `StoreError` code `EIO` with the driver error as `cause`; callers treat
 *   `EIO` as "this member can no longer rely on the store" (the reference stops the server or leaves
 *   quorum on a block IO error).
 * - The grant-tag key (core/grant-tags.ts): GRANT_TAG_KEY_BYTES random bytes, made by the first
 *   `grantTagKey` call on a formatted store (ENOTFORMATTED before) and never changed, so every member tags
 *   and checks grants under the same key, across restarts and failovers too. Of racing first calls (any
 *   instances, any processes) exactly one creation lands and every call returns its bytes (a fresh copy
 *   each time). The key is as secret as the store: no other method returns it.
 * - `close` is idempotent; calls after close reject with `EIO`.
 * - `url` identifies the store in logs and never contains a password.
 *
 * Relies on: callers writing only their own slot (the store checks the slot is configured, not that it
 * is "theirs": that is the election's job, reference §7.3 "BEGIN.rid == own rid").
 */

import { U64_MAX } from "../core/limits.js";
import { GRANT_TAG_KEY_BYTES } from "../core/grant-tags.js";
import {
  CLIENT_TEXT_CHARS_MAX,
  CLUSTER_ID_CHARS_MAX,
  HOST_CHARS_MAX,
  PID_MAX,
  PORT_MAX,
  PORT_MIN,
  SLOTS_MAX,
  SLOT_MAX,
  TERM_MAX,
} from "../core/limits.js";

export { U64_MAX };

export interface SlotAddress {
  /** 0..SLOT_MAX (core/limits.ts) */
  slot: number;
  host: string;
  port: number;
}

export interface ClusterConfig {
  clusterId: string;
  /** Ordered by slot when read back. */
  slots: SlotAddress[];
  /** Hex SHA-256 of the cluster secret (64 lowercase hex digits), or null when there is no secret. */
  secretDigest: string | null;
  formattedAtMs: number;
}

export interface MountedClientRecord {
  rid: bigint;
  name: string;
  address: string;
  /** The process the server found to own the client's connection (io/peer-process.ts); 0 when none was found. */
  pid: number;
  /** That process's start token (io/peer-process.ts); "" exactly when pid is 0. */
  pidStart: string;
  hostname: string;
  greetedAtMs: number;
  /**
   * Greeting v2 (DESIGN §9, docs/protocol.md): the Ed25519 public key of the client's resumption secret
   * (hex, 64 digits), or "" for a record written before protocol version 2. A one-way function of the
   * secret: a reader of the store cannot prove possession of it.
   */
  resumeKey: string;
  /** The public key of the claim the client chose for its first greeting (hex), or "": B21's resend proof. */
  claimKey: string;
}

export const SLOT_EVENT_KINDS = ["BEGIN", "TERM", "ELECT", "FENCE", "STOP", "END"] as const;
export type SlotEventKind = (typeof SLOT_EVENT_KINDS)[number];

export interface SlotEvent {
  term: bigint;
  rid: bigint;
  timeMs: number;
  /** The slot's write number when this event was written (1 for a slot's first write). */
  writeNr: number;
  /** The member process that wrote the event, when it recorded itself (the local fence agent uses it). */
  pid?: number;
  /** That process's start token (io/peer-process.ts); present exactly when pid is. */
  pidStart?: string;
}

export interface SlotRecord {
  slot: number;
  events: Partial<Record<SlotEventKind, SlotEvent>>;
}

/** What a caller passes to write a slot event; the store adds the write number. */
export interface SlotEventInput {
  term: bigint;
  rid: bigint;
  timeMs: number;
  /** The writing member's own process (pid and start token, together), so a later leader can fence it. */
  pid?: number;
  pidStart?: string;
}

export interface Store {
  /** Identifies the store in logs; never contains a password. */
  readonly url: string;
  /**
   * Writes the config once; rejects with EEXIST if already formatted (the first config stays). Rejects
   * with EINVAL, writing nothing, unless: 1..SLOTS_MAX slots, slot numbers 0..SLOT_MAX and unique, no two slots with
   * the same host:port, ports 1..65534 (see validateClusterConfig for the rest).
   */
  format(config: ClusterConfig): Promise<void>;
  /** The config, slots ordered by slot; null before format. */
  readConfig(): Promise<ClusterConfig | null>;
  /** Seq high-water mark: every write_seq ever handed out is ≤ it. 0n before anything was raised. */
  readSeqHighWater(): Promise<bigint>;
  /** Durably raise the high-water mark to at least `atLeast` (never lowers); returns the stored value. */
  raiseSeqHighWater(atLeast: bigint): Promise<bigint>;
  /** Insert a mounted-client record durably; inserting an existing rid is success and keeps the first record (B21). */
  insertClient(record: MountedClientRecord): Promise<void>;
  /** Delete; deleting an absent rid is success. */
  deleteClient(rid: bigint): Promise<void>;
  getClient(rid: bigint): Promise<MountedClientRecord | null>;
  /** Ordered by rid (unsigned). */
  listClients(): Promise<MountedClientRecord[]>;
  /** Every slot that has any event, ordered by slot. */
  readSlots(): Promise<SlotRecord[]>;
  /** Set one event of one configured slot; the slot's write number increments (reference §7.3). */
  writeSlotEvent(slot: number, kind: SlotEventKind, event: SlotEventInput): Promise<void>;
  /**
   * ELECT is conditional (DESIGN §4 last row): atomically fails (returns false, writes nothing) if any
   * slot has any event with a term > `event.term`; otherwise writes the slot's ELECT event, returns true.
   */
  writeElect(slot: number, event: SlotEventInput): Promise<boolean>;
  /**
   * The cluster's grant-tag key (core/grant-tags.ts): 16 random bytes, created on first call (every caller,
   * on any member, gets the same bytes, also when several race to create it), never changed afterwards.
   * Rejects with ENOTFORMATTED before format (like every other write). Each call returns a new copy.
   */
  grantTagKey(): Promise<Uint8Array>;
  /** Idempotent; later calls on this instance reject with EIO. */
  close(): Promise<void>;
}

export type StoreErrorCode = "EEXIST" | "EINVAL" | "ENOTFORMATTED" | "EIO";

export class StoreError extends Error {
  readonly code: StoreErrorCode;
  constructor(code: StoreErrorCode, message: string, options?: { cause?: unknown }) {
    super(`${code}: ${message}`, options);
    this.name = "StoreError";
    this.code = code;
  }
}

/** Wrap anything that is not already a StoreError as EIO, naming the operation that failed. */
export function toStoreError(what: string, error: unknown): StoreError {
  if (error instanceof StoreError) return error;
  const detail = error instanceof Error ? error.message : String(error);
  return new StoreError("EIO", `${what}: ${detail}`, { cause: error });
}

/**
 * A grant-tag key as read back from an engine, copied into a plain Uint8Array (callers may keep or change it
 * without touching what is stored); anything but GRANT_TAG_KEY_BYTES bytes is a corrupt store (EIO).
 */
export function grantTagKeyFromStore(bytes: unknown, where: string): Uint8Array {
  if (!(bytes instanceof Uint8Array) || bytes.length !== GRANT_TAG_KEY_BYTES) {
    const size = bytes instanceof Uint8Array ? `${bytes.length} bytes` : typeof bytes;
    throw new StoreError(
      "EIO",
      `corrupt grant-tag key in ${where}: ${size}, not ${GRANT_TAG_KEY_BYTES} bytes`,
    );
  }
  return new Uint8Array(bytes);
}

// ---------------------------------------------------------------------------------------------------
// Input validation shared by every engine, so they refuse exactly the same things.

function invalid(message: string): never {
  throw new StoreError("EINVAL", message);
}

function isNonNegativeSafeInteger(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

export function checkU64(value: unknown, what: string): bigint {
  if (typeof value !== "bigint") invalid(`${what} must be a bigint, got ${typeof value}`);
  if (value < 0n || value > U64_MAX) invalid(`${what} ${value} is outside the unsigned 64-bit range`);
  return value;
}

export function checkTimeMs(value: unknown, what: string): number {
  if (!isNonNegativeSafeInteger(value)) invalid(`${what} must be a non-negative integer of milliseconds`);
  return value;
}

export function checkSlotNumber(value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > SLOT_MAX) {
    invalid(`slot ${String(value)} is outside 0..${SLOT_MAX}`);
  }
  return value;
}

export function checkSlotEventKind(value: unknown): SlotEventKind {
  if (!(SLOT_EVENT_KINDS as readonly unknown[]).includes(value)) {
    invalid(`slot event kind ${String(value)} is not one of ${SLOT_EVENT_KINDS.join(", ")}`);
  }
  return value as SlotEventKind;
}

export function checkSlotEventInput(event: SlotEventInput): SlotEventInput {
  const term = checkU64(event.term, "slot event term");
  if (term > TERM_MAX) invalid(`slot event term ${term} is above TERM_MAX ${TERM_MAX}; terms beyond it are never used`);
  const valid: SlotEventInput = {
    term,
    rid: checkU64(event.rid, "slot event rid"),
    timeMs: checkTimeMs(event.timeMs, "slot event timeMs"),
  };
  if (event.pid === undefined && event.pidStart === undefined) return valid;
  if (!isPid(event.pid) || event.pid === 0) invalid(`slot event pid ${String(event.pid)} is not a valid pid`);
  const pidStart = checkText(event.pidStart, "slot event pidStart", CLIENT_TEXT_CHARS_MAX, false);
  return { ...valid, pid: event.pid, pidStart };
}

function isPid(value: unknown): value is number {
  return isNonNegativeSafeInteger(value) && value <= PID_MAX;
}

function checkText(value: unknown, what: string, charsMax: number, allowEmpty: boolean): string {
  if (typeof value !== "string") invalid(`${what} must be a string`);
  if (!allowEmpty && value.length === 0) invalid(`${what} must not be empty`);
  if (value.length > charsMax) invalid(`${what} is ${value.length} characters; at most ${charsMax} allowed`);
  return value;
}

/** A validated copy of a client record. rid 0 never exists (reference §5.1), so it is refused. */
export function checkClientRecord(record: MountedClientRecord): MountedClientRecord {
  const rid = checkU64(record.rid, "client rid");
  if (rid === 0n) invalid("client rid 0 is reserved (no client has it)");
  const pid = record.pid;
  if (!isPid(pid)) invalid(`client pid ${String(pid)} is not a valid pid`);
  const pidStart = checkText(record.pidStart, "client pidStart", CLIENT_TEXT_CHARS_MAX, true);
  if ((pid === 0) !== (pidStart === "")) invalid("a client's pid and pidStart come together (0 and \"\" when no process was found)");
  return {
    rid,
    name: checkText(record.name, "client name", CLIENT_TEXT_CHARS_MAX, true),
    address: checkText(record.address, "client address", CLIENT_TEXT_CHARS_MAX, true),
    pid,
    pidStart,
    hostname: checkText(record.hostname, "client hostname", CLIENT_TEXT_CHARS_MAX, true),
    greetedAtMs: checkTimeMs(record.greetedAtMs, "client greetedAtMs"),
    resumeKey: checkPublicKeyHex(record.resumeKey, "client resumeKey"),
    claimKey: checkPublicKeyHex(record.claimKey, "client claimKey"),
  };
}

/** A public key as 64 lowercase hex digits, or "" (none). */
function checkPublicKeyHex(value: unknown, what: string): string {
  if (typeof value !== "string" || !(value === "" || /^[0-9a-f]{64}$/.test(value))) {
    invalid(`${what} must be 64 lowercase hex digits or empty`);
  }
  return value;
}

/**
 * A validated copy of a cluster config, slots ordered by slot. Refuses (EINVAL, naming the problem):
 * no slots or more than SLOTS_MAX; a slot number outside 0..SLOT_MAX or used twice; an empty host; a port outside
 * 1..65534; two slots with the same host:port (hosts compared case-insensitively); an empty or
 * overlong cluster id; a secret digest that is not 64 lowercase hex digits; a bad formattedAtMs.
 */
export function validateClusterConfig(config: ClusterConfig): ClusterConfig {
  const clusterId = checkText(config.clusterId, "cluster id", CLUSTER_ID_CHARS_MAX, false);
  const secretDigest = config.secretDigest;
  if (secretDigest !== null && (typeof secretDigest !== "string" || !/^[0-9a-f]{64}$/.test(secretDigest))) {
    invalid("secret digest must be 64 lowercase hex digits (SHA-256) or null");
  }
  const formattedAtMs = checkTimeMs(config.formattedAtMs, "formattedAtMs");
  if (!Array.isArray(config.slots)) invalid("slots must be an array");
  const slots = config.slots;
  if (slots.length < 1) invalid("a cluster needs at least one slot");
  if (slots.length > SLOTS_MAX) invalid(`${slots.length} slots given; at most ${SLOTS_MAX} allowed`);
  const seenSlots = new Set<number>();
  const seenAddresses = new Map<string, number>();
  const out: SlotAddress[] = [];
  for (const entry of slots) {
    const slot = checkSlotNumber(entry.slot);
    if (seenSlots.has(slot)) invalid(`slot ${slot} appears more than once`);
    seenSlots.add(slot);
    const host = checkText(entry.host, `slot ${slot} host`, HOST_CHARS_MAX, false);
    const port = entry.port;
    if (typeof port !== "number" || !Number.isInteger(port) || port < PORT_MIN || port > PORT_MAX) {
      invalid(`slot ${slot} port ${String(port)} is outside ${PORT_MIN}..${PORT_MAX}`);
    }
    const address = `${host.toLowerCase()}:${port}`;
    const other = seenAddresses.get(address);
    if (other !== undefined) invalid(`slots ${other} and ${slot} share the address ${host}:${port}`);
    seenAddresses.set(address, slot);
    out.push({ slot, host, port });
  }
  out.sort((a, b) => a.slot - b.slot);
  return { clusterId, slots: out, secretDigest, formattedAtMs };
}

// ---------------------------------------------------------------------------------------------------
// Store URLs: "sqlite:PATH", "postgres://..." / "postgresql://...", "memory:".

export type ParsedStoreUrl =
  | { kind: "sqlite"; path: string }
  | { kind: "postgres"; connectionString: string; redacted: string }
  | { kind: "memory" };

const STORE_URL_FORMS = `"sqlite:PATH", "postgres://USER@HOST:PORT/DB" (or postgresql://) or "memory:"`;

/** Parse and validate a store URL; throws StoreError EINVAL naming the problem. */
export function parseStoreUrl(url: string): ParsedStoreUrl {
  if (typeof url !== "string" || url.length === 0) invalid(`store URL is empty; use ${STORE_URL_FORMS}`);
  if (url.startsWith("sqlite:")) {
    const path = url.slice("sqlite:".length);
    if (path.length === 0) invalid(`store URL "${url}" has no file path; use sqlite:PATH`);
    if (path.startsWith("//")) {
      invalid(`store URL "${url}": write sqlite:/absolute/path or sqlite:relative/path, not sqlite://`);
    }
    if (path.includes("\0")) invalid(`store URL "${url}" has a NUL byte in its path`);
    return { kind: "sqlite", path };
  }
  if (url === "memory:") return { kind: "memory" };
  if (url.startsWith("memory:")) invalid(`store URL "${url}": a memory store takes no path; use "memory:"`);
  if (url.startsWith("postgres://") || url.startsWith("postgresql://")) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      // Do not echo the URL: it may hold a password.
      invalid("PostgreSQL store URL is not a valid URL; use postgres://USER[:PASSWORD]@HOST[:PORT]/DB");
    }
    const redacted = redactPostgresUrl(parsed, url);
    if (parsed.port !== "") {
      const port = Number(parsed.port);
      if (!Number.isInteger(port) || port < 1 || port > 65535)
        invalid(`store URL "${redacted}" has a bad port`);
    }
    return { kind: "postgres", connectionString: url, redacted };
  }
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(url)?.[1];
  invalid(
    scheme === undefined
      ? `store URL "${url}" has no scheme; use ${STORE_URL_FORMS}`
      : `store URL scheme "${scheme}:" is not supported; use ${STORE_URL_FORMS}`,
  );
}

/** The URL with its password (user-info or ?password=) replaced by "***"; unchanged if it has none. */
function redactPostgresUrl(parsed: URL, original: string): string {
  const hasQueryPassword = parsed.searchParams.has("password");
  if (parsed.password === "" && !hasQueryPassword) return original;
  const copy = new URL(parsed.href);
  if (copy.password !== "") copy.password = "***";
  if (hasQueryPassword) copy.searchParams.set("password", "***");
  return copy.href;
}

/** A store URL safe for logs: passwords redacted; an unparseable URL is reduced to its scheme. */
export function redactStoreUrl(url: string): string {
  try {
    const parsed = parseStoreUrl(url);
    return parsed.kind === "postgres" ? parsed.redacted : url;
  } catch {
    const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(url)?.[1];
    return scheme === undefined ? "(invalid store URL)" : `${scheme}:(invalid store URL)`;
  }
}
