/**
 * The server lock table (reference §3, DESIGN §3–§4): per key, FIFO lists of granted, requested and
 * invalidated client entries, and the one progress function that decides every grant and invalidation.
 *
 * Guarantees:
 * - Strict FIFO per key: requests are considered oldest first and a later request, even a compatible one,
 *   never overtakes an earlier blocked one (head-of-line blocking, reference §3.5).
 * - For the head request every conflicting granted entry (modes.ts `compatible`, same-client rules
 *   included) is invalidated at once and moved to `invalidated`; nothing is granted on that key until
 *   every invalidated entry has answered or its client is gone.
 * - A grant replaces the requester's own granted entry (its mode is the grant's oldMode); null grants are
 *   forgotten at once; write and write_only grants carry a fresh writeSeq, strictly greater than every
 *   writeSeq handed out before and every writeSeq reported in recovery (asserted).
 * - While the recovery hold is in effect nothing is granted or invalidated on any key; requests queue.
 * - A write or write_only request is only acted on (its conflicting holders invalidated, then the grant)
 *   while the WriteSeqSource has a token available; otherwise its key stays exactly as it is and waits
 *   for `onWriteSeqsAvailable()` (DESIGN §9 "grants pause while a fencing-token reservation is
 *   pending"). A noQueue write/write_only request is refused (EAGAIN) while no token is available.
 * - A key whose three lists are empty is gone from the table, stats included (reference §3.2, §3.7).
 * - Effects come back in the order the decisions were taken and must be sent in that order: a grant that
 *   precedes an invalidation of the same client on the same key must reach it first.
 * - Bad peer input (invalid mode, a response nobody asked for, a second queued request from one client
 *   on one key, a recovery report that is malformed, reports a key twice, loses a conflict with another
 *   client's report or carries a write seq above the durable high-water mark) never throws: it yields a
 *   `protocol-error` effect whose ProtocolError names the problem, and changes nothing (a recovery batch
 *   is refused whole). Only a broken internal invariant throws. A recovery report that a later report
 *   proves stale or forged yields a `refuted` effect (its entry on that key dropped).
 * - Every non-null grant carries its proof (grantTerm = this server's term, grantNo = 1, 2, ... in grant
 *   order, grantTag from the injected GrantTags); a null grant carries zeros.
 *
 * Relies on:
 * - Each client keeps at most one request outstanding per key (reference §12); a second one is refused.
 * - The driver delivers one client's messages in order, exactly once per server (session layer), and
 *   sends the effects it gets back in order. Across servers messages may repeat; a new server starts
 *   with a new, empty LockServer, so a replayed request is simply a new request.
 * - The injected WriteSeqSource strictly increases, `observe` raises it (persisted high-water mark), and
 *   its driver calls `onWriteSeqsAvailable` when `available()` turns true again.
 * - The driver calls `onClientGone` for a farewell or a reclaim only after that client's lock recovery
 *   finished (regression B5), and `onRecoverBatch` only for clients the recovery tracker still waits for.
 *
 * Across recovery: a new server calls `holdForRecovery()` before accepting clients. Clients report the
 * locks they hold (`onRecoverBatch`); each becomes a granted entry with requestId 0, null modes included
 * (reference §5.4): such a null entry is cleaned by the null→null self-invalidation its client's next
 * request causes. Resent requests queue meanwhile. `resumeAfterRecovery()` then makes progress on every
 * key with queued requests, in key order (reference §5.5). A batch with any bad report (a key reported
 * twice or already held, a conflict with another client's report that it loses, a write seq the cluster
 * never handed out) is refused whole with one protocol-error; the driver closes that connection, and the
 * client, whose recovery then never finishes, is fenced and reclaimed at the recovery deadline (DESIGN
 * §9). Conflicts are settled by the grant proofs every non-null grant carries (core/grant-tags.ts; see
 * onRecoverBatch): whoever reports first, a stale or forged report loses to a verified later grant.
 *
 * Decisions beyond the reference (DESIGN §4): a noQueue (nonblock) request is admitted when recovery
 * does not hold the table, nothing is queued or invalidated on the key, and every granted entry it
 * conflicts with is the requester's own; otherwise it is refused (EAGAIN) without queuing or
 * invalidating anyone. Admitted, it is a normal request: granted at once, or, when its own cached grant
 * conflicts (e.g. an idle write_only and a trylock for read), that entry is self-invalidated first and
 * the grant follows the client's answer. The client sends a no-queue request only when no local handle
 * conflicts with it, so it answers without waiting on anyone; meanwhile later requests queue behind it
 * (FIFO). A trylock therefore succeeds on a key nobody else uses. The requester's own null entry (left
 * by recovery) is simply dropped: a null→null self-invalidation would only remove that entry, which the
 * grant replaces anyway, so the trylock is granted without that round trip.
 * An invalidation response must report null, or read for an entry held as write: a client never answers
 * an invalidation with a mode it was not asked to go down to, so anything else is a protocol error.
 *
 * Memory (DESIGN §7): one small node per key (three lazily created lists and four counters) and one
 * three-field entry per (key, client); lists of one entry are created exactly sized and dropped when
 * empty. Entries are immutable and one-entry lists are never changed in place, so recovery shares them:
 * every key one batch reports in one mode gets the same entry in the same one-entry list, and a key
 * recovery creates for one holder is kept as that list alone, without a node, until something happens on
 * it (then `#node` makes its node): a recovered lock costs its key string and its map slot, not four more
 * objects (fewer survivors for the collector when a million locks come back; bench/core.ts: 81 instead
 * of 265 bytes per recovered entry). Per client there is one record: three counters (`clientLoad`:
 * entries, queued requests, outstanding invalidations), kept exact at every change in O(1), so the driver can enforce its
 * per-client limits (core/limits.ts) before a request touches the table; and a list of the keys the
 * client may have entries on (one array slot per entry, the key string shared with the table), so that
 * `onClientGone` visits only that client's keys, never the table. A key is appended when the client
 * gets an entry on it while it had none there (a request; a recovered lock), and not removed when the
 * entry goes; when an append leaves the list longer than 2 × the client's entries + 16 it is compacted
 * (keys without its entry dropped, then repeats if any remain), so appends cost amortised O(1), the
 * list is at most 2 × entries + 16 long as of the client's last append (a departure visits no more), and
 * a client churning fresh keys or re-requesting one key forever keeps a short list. Measured
 * (bench/core.ts): about 287 bytes per granted entry at 1,000,000 entries held by 100 clients, the
 * 16-byte key strings included (279 before the key lists).
 *
 * Admin pages (DESIGN §9): the keys with state are also kept in a KeyIndex (key-index.ts, one array
 * slot per key), so `keysAfter(K)` starts a page in O(log n) and `dump()`/`stats()` never sort. While
 * recovery holds the table, new keys are indexed in bulk instead (at the end of recovery, or when a page
 * is asked for meanwhile: then that page pays one merge).
 */
import { ProtocolError, invariant } from "./errors.js";
import { KeyIndex } from "./key-index.js";
import { KEY_BYTES_MAX, compareKeys, keyToHex, ridToHex, type Key } from "./keys.js";
import type { LockGrant, LockInvalidation, LockRequest, RecoveredLock, Rid } from "./lock-messages.js";
import { U64_MAX, WRITE_SEQ_MAX } from "./limits.js";
import { GRANT_TAG_KEY_BYTES, GrantTags, grantIsLater, type GrantClaim } from "./grant-tags.js";
import { carriesWriteSeq, compatible, invalidationMode, modeCode, type LockMode } from "./modes.js";

/**
 * Fencing-token source injected by the driver: next() strictly increases; observe() raises it to at least
 * `seen` (recovery). `available()` says whether next() can hand out a token now: a driver whose tokens are
 * reserved in a store answers false while its reserved block is used up (a reservation is pending, or the
 * bound is reached), and then calls `LockServer.onWriteSeqsAvailable()` once tokens are in hand again.
 * next() is only called right after available() answered true.
 */
export interface WriteSeqSource {
  available(): boolean;
  next(): bigint;
  observe(seen: bigint): void;
}

/** An in-memory WriteSeqSource: next() returns last + 1. For tests, the simulator, and drivers that persist `last`. */
export class WriteSeqCounter implements WriteSeqSource {
  #last: bigint;
  constructor(last = 0n) {
    this.#last = last;
  }
  available(): boolean {
    return true;
  }
  next(): bigint {
    return ++this.#last;
  }
  observe(seen: bigint): void {
    if (seen > this.#last) this.#last = seen;
  }
  /** The last value handed out or observed. */
  get last(): bigint {
    return this.#last;
  }
}

export type LockServerEffect =
  | { type: "grant"; rid: Rid; requestId: number; grant: LockGrant }
  | { type: "invalidate"; rid: Rid; invalidation: LockInvalidation }
  | { type: "refuse"; rid: Rid; requestId: number; key: Key; code: "EAGAIN" }
  | { type: "protocol-error"; rid: Rid; error: ProtocolError }
  /**
   * Recovery: another client's report proved this client's report of `key` stale or forged (its grant
   * proof does not verify, or another client was granted the key later). Its entry on the key is gone;
   * the driver closes its connection with `error` and has it fenced and reclaimed (it lied about a lock).
   */
  | { type: "refuted"; rid: Rid; key: Key; error: ProtocolError };

export interface LockEntryView {
  key: Key;
  rid: Rid;
  mode: LockMode;
  state: "granted" | "requested" | "invalidated";
  requestId: number;
}

/** What one client has in the table (its counters in `LockServer.clientLoad`). */
export interface ClientLoad {
  /** Granted, requested and invalidated entries (a key being upgraded counts its two entries). */
  entries: number;
  /** Entries in `requested`: lock requests waiting for their grant. */
  requests: number;
  /** Entries in `invalidated`: invalidations sent to the client and not answered yet. */
  invalidated: number;
}

const NO_LOAD: Readonly<ClientLoad> = Object.freeze({ entries: 0, requests: 0, invalidated: 0 });

/**
 * Slack of a client's key list over twice its entry count before the list is compacted: a client with
 * one entry re-requesting one key compacts every ~KEYS_SLACK requests, at O(KEYS_SLACK) each.
 */
const KEYS_SLACK = 16;

/**
 * One client's record: its counters (what `clientLoad` shows) and the keys it may have entries on.
 * `keys` holds every key where the client has an entry, and may also hold keys where it no longer has
 * one, or a key more than once: a key is added when the client gets an entry there while it had none
 * (a request; a recovered lock, always) and never removed, except by compaction
 * (`LockServer.#compactKeys`), which runs when an addition leaves it longer than 2 × entries + KEYS_SLACK. The list is a private field behind a
 * getter, so what `clientLoad` returns spreads and serialises as the three counters alone (and a record
 * costs one allocation more than a plain object: made whenever a client's entries go from 0 to 1).
 */
class ClientRecord implements ClientLoad {
  entries = 0;
  requests = 0;
  invalidated = 0;
  readonly #keys: Key[] = [];
  get keys(): Key[] {
    return this.#keys;
  }
}

export interface LockStatsView {
  key: Key;
  requests: number;
  invalidations: number;
  responses: number;
  grants: number;
}

/**
 * One client's place on one key. `requestId` addresses the grant; it is 0 for recovered entries.
 * Immutable: a changed mode is a new entry, so one entry may stand on many keys (recovery gives every
 * key one client reports in one mode in one batch the same entry, in the same one-entry list).
 */
class LockEntry {
  readonly rid: Rid;
  readonly mode: LockMode;
  readonly requestId: number;
  constructor(rid: Rid, mode: LockMode, requestId: number) {
    this.rid = rid;
    this.mode = mode;
    this.requestId = requestId;
  }
}

/**
 * A list is absent rather than empty, so an idle key costs one node and one exactly sized array.
 * A list of one entry is never changed in place (recovery shares one such list between many keys):
 * adding to it, or taking its entry away, makes a new list (or none). Longer lists belong to one key.
 */
type EntryList = LockEntry[] | undefined;

/** The state of one key: the three FIFO lists of reference §3.1 and its message counters (§3.7). */
class LockNode {
  granted: EntryList = undefined;
  requested: EntryList = undefined;
  invalidated: EntryList = undefined;
  requests = 0;
  invalidations = 0;
  responses = 0;
  grants = 0;
}

/** The list with `entry` added at its end (a new list when it had one entry: that one may be shared). */
function appended(list: EntryList, entry: LockEntry): LockEntry[] {
  if (list === undefined) return [entry];
  if (list.length === 1) return [list[0]!, entry];
  list.push(entry);
  return list;
}

/** The list without list[index]; undefined when that was the last entry (a one-entry list is not changed). */
function withoutIndex(list: LockEntry[], index: number): EntryList {
  if (list.length === 1) return undefined;
  for (let i = index + 1; i < list.length; i++) list[i - 1] = list[i]!;
  list.length -= 1;
  return list;
}

function indexOfRid(list: EntryList, rid: Rid): number {
  if (list === undefined) return -1;
  for (let i = 0; i < list.length; i++) if (list[i]!.rid === rid) return i;
  return -1;
}

/**
 * The list without the entries of `rid` (undefined when none is left); a list of two or more entries is
 * changed in place, a one-entry list never (it may be shared).
 */
function withoutRid(list: EntryList, rid: Rid): EntryList {
  if (list === undefined) return undefined;
  if (list.length === 1) return list[0]!.rid === rid ? undefined : list;
  let kept = 0;
  for (const entry of list) if (entry.rid !== rid) list[kept++] = entry;
  if (kept === 0) return undefined;
  list.length = kept;
  return list;
}

/** Whether `keys` is in strictly ascending (bytewise) order. */
function ascending(keys: readonly Key[]): boolean {
  for (let i = 1; i < keys.length; i++) if (!(keys[i - 1]! < keys[i]!)) return false;
  return true;
}

function isEmpty(node: LockNode): boolean {
  return node.granted === undefined && node.requested === undefined && node.invalidated === undefined;
}

/** A key for messages: quoted when it is printable ASCII, else hex. */
function describeKey(key: Key): string {
  return /^[\x20-\x7e]*$/.test(key) ? JSON.stringify(key) : `0x${keyToHex(key)}`;
}

function describeValue(value: unknown): string {
  return typeof value === "string"
    ? JSON.stringify(value)
    : typeof value === "bigint"
      ? `${value}n`
      : String(value);
}

/** Why a peer-supplied key is not a key (the codec should have caught it), or undefined. */
function keyFieldProblem(key: unknown): string | undefined {
  if (typeof key !== "string") return `key ${describeValue(key)} is not a key`;
  if (key.length > KEY_BYTES_MAX) return `key is ${key.length} bytes; at most ${KEY_BYTES_MAX} allowed`;
  return undefined;
}

function requestProblem(requestId: number, request: LockRequest): string | undefined {
  if (!Number.isSafeInteger(requestId) || requestId < 0)
    return `request id ${describeValue(requestId)} is not a request id`;
  const keyProblem = keyFieldProblem(request.key);
  if (keyProblem !== undefined) return keyProblem;
  // modeCode, not isLockMode: a switch, where `includes` is a builtin call (this runs per request).
  if (modeCode(request.newMode) < 0) return `invalid mode ${describeValue(request.newMode)} requested`;
  if (modeCode(request.oldMode) < 0) return `invalid old mode ${describeValue(request.oldMode)}`;
  if (typeof request.noQueue !== "boolean")
    return `noQueue ${describeValue(request.noQueue)} is not a boolean`;
  return undefined;
}

function recoveredLockProblem(lock: RecoveredLock, writeSeqMax: bigint): string | undefined {
  const keyProblem = keyFieldProblem(lock.key);
  if (keyProblem !== undefined) return keyProblem;
  if (modeCode(lock.mode) < 0)
    return `invalid mode ${describeValue(lock.mode)} reported for key ${describeKey(lock.key)}`;
  if (typeof lock.writeSeq !== "bigint" || lock.writeSeq < 0n) {
    return `write seq ${describeValue(lock.writeSeq)} reported for key ${describeKey(lock.key)} is not a sequence`;
  }
  if (lock.writeSeq > writeSeqMax) {
    return (
      `write seq ${lock.writeSeq} reported for key ${describeKey(lock.key)} is above ${writeSeqMax}, ` +
      `the highest the cluster can have handed out`
    );
  }
  // The grant proof is only read on a conflict (GrantTags.verify), but its types are checked on every
  // report: in-memory callers (the simulator) bypass the codec, which checks them on the wire.
  const term = lock.grantTerm;
  if (typeof term !== "bigint" || term < 0n || term > U64_MAX || !isProofNumber(lock.grantNo) || !isProofNumber(lock.grantTag)) {
    return `the grant proof reported for key ${describeKey(lock.key)} is malformed`;
  }
  return undefined;
}

function isProofNumber(value: unknown): boolean {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/** The first entry of `holders` whose mode is incompatible with `mode` (modes.ts `compatible`), or undefined. */
function conflictingHolder(holders: EntryList, mode: LockMode): LockEntry | undefined {
  if (holders === undefined) return undefined;
  for (let i = 0; i < holders.length; i++) if (!compatible(holders[i]!.mode, mode, false)) return holders[i];
  return undefined;
}

/** The start of an invalidation response's refusal text. */
function responseContext(rid: Rid): string {
  return `invalidation response from rid ${ridToHex(rid)}`;
}

/** The start of an invalidation response's refusal text, with its key. */
function responseWhere(rid: Rid, key: Key): string {
  return `${responseContext(rid)} on key ${describeKey(key)}`;
}

function protocolError(rid: Rid, message: string): LockServerEffect {
  return { type: "protocol-error", rid, error: new ProtocolError(message) };
}

/**
 * The grant proofs of one accepted recovery batch, in columns of plain arrays (no object per lock: the
 * keys, which the table holds anyway; grantNo and grantTag in one array of doubles; each lock's term as an
 * index into the batch's few distinct terms). Keeping the reports themselves until recovery ends cost the
 * member about 0.5 µs more per recovered lock (1.4–1.5 µs without keeping anything; promotions), typed
 * arrays about 0.25 µs, these columns 0.1–0.2 µs (bench/recover-cost.ts server, 1,000 batches, a noisy
 * machine: rounds alternated).
 */
class BatchClaims {
  readonly keys: Key[];
  /** grantNo and grantTag of each lock, interleaved. */
  readonly proofs: number[];
  /** Per lock, the index of its grantTerm in `#terms`. */
  readonly #termAt: number[];
  readonly #terms: bigint[] = [];
  /** Keys strictly ascending (as the codec lets them through): searched by halves, else scanned. */
  readonly #sorted: boolean;

  constructor(locks: readonly RecoveredLock[]) {
    const count = locks.length;
    const keys: Key[] = [];
    const proofs: number[] = [];
    const termAt: number[] = [];
    const terms = this.#terms;
    let sorted = true;
    let lastTerm = -1n;
    let lastAt = -1;
    for (let i = 0; i < count; i++) {
      const lock = locks[i]!;
      const key = lock.key;
      if (i > 0 && !(key > keys[i - 1]!)) sorted = false;
      keys.push(key);
      proofs.push(lock.grantNo, lock.grantTag);
      if (lock.grantTerm !== lastTerm) {
        lastTerm = lock.grantTerm;
        lastAt = terms.indexOf(lastTerm);
        if (lastAt < 0) lastAt = terms.push(lastTerm) - 1;
      }
      termAt.push(lastAt);
    }
    this.keys = keys;
    this.proofs = proofs;
    this.#termAt = termAt;
    this.#sorted = sorted;
  }

  termOf(index: number): bigint {
    return this.#terms[this.#termAt[index]!]!;
  }

  indexOf(key: Key): number {
    const keys = this.keys;
    if (!this.#sorted) return keys.indexOf(key);
    let low = 0;
    let high = keys.length - 1;
    while (low <= high) {
      const middle = (low + high) >>> 1;
      const at = keys[middle]!;
      if (at === key) return middle;
      if (at < key) low = middle + 1;
      else high = middle - 1;
    }
    return -1;
  }
}

export class LockServer {
  readonly #writeSeq: WriteSeqSource;
  /**
   * Per key with state: its node, or, for a key recovery created for one holder on which nothing happened
   * since, only that holder's one-entry list (shared, see onRecoverBatch): it stands for a node with that
   * granted list, nothing requested or invalidated, and zero counters, and becomes one (#node) on first use.
   */
  readonly #nodes = new Map<Key, LockNode | LockEntry[]>();
  /** The keys of #nodes, ordered (admin pages), except those still in #unindexed. */
  readonly #index = new KeyIndex();
  /**
   * While recovery holds the table, new keys wait here and are indexed in bulk (one sort of mostly
   * sorted runs and one merge) when recovery ends or an admin page needs them: recovering a million
   * locks then costs no search per key. May hold keys since removed, or twice; null when not deferring.
   */
  #unindexed: Key[] | null = null;
  /** A key left the table while in #unindexed: filter before indexing. */
  #unindexedStale = false;
  /** Per-client counters and key lists; a client with no entry has no record. */
  readonly #loads = new Map<Rid, ClientRecord>();
  #lastLoadRid: Rid | undefined = undefined;
  #lastLoad: ClientRecord | undefined = undefined;
  #recovering = false;
  /** Scratch of onRecoverBatch: each reported key's node, found while checking (undefined between calls). */
  readonly #recoverNodes: (LockNode | LockEntry[] | undefined)[] = [];
  /** Scratch of onRecoverBatch: the batch's one-entry list per mode (MODE_CODE: modeCode), empty between calls. */
  readonly #recoverLists: (LockEntry[] | undefined)[] = [undefined, undefined, undefined, undefined];
  /** Scratch of onRecoverBatch: the checked batch's highest write seq. */
  #recoverSeqMax = 0n;
  #entryCount = 0;
  /** The highest write seq handed out or reported in recovery; the next one must exceed it (§3.11). */
  #writeSeqFloor = 0n;
  /** Recovery reports above this are refused (DESIGN §9). */
  readonly #recoveredWriteSeqMax: bigint;
  /** `#progressOn`'s collection of effects: empty between calls. */
  readonly #progressEffects: LockServerEffect[] = [];
  /** Keys whose head request waits for a fencing token (the source had none available); see onWriteSeqsAvailable. */
  readonly #seqWaiting = new Set<Key>();
  /** Tags every non-null grant (core/grant-tags.ts) and checks recovery reports that conflict. */
  readonly #tags: GrantTags;
  /** This server's term: every grant's proof names it. */
  readonly #term: bigint;
  /** Non-null grants handed out so far; the next one's grantNo is one more. */
  #grantCount = 0;
  /**
   * While recovery holds the table: the grant proofs of every batch accepted, per client (BatchClaims).
   * Only a conflict reads them, to check the proof of the entry already in the table (#claimOf); dropped
   * when recovery ends.
   */
  #claims: Map<Rid, BatchClaims[]> | null = null;

  /**
   * `recoveredWriteSeqMax`: the highest write seq a recovery report may carry; the driver passes the
   * durable high-water mark read at start (every token ever handed out is at or below it). Default and
   * upper bound: WRITE_SEQ_MAX. `tags` and `term`: the cluster's grant tags (the driver makes them from
   * the store's key) and this server's term; by default (tests of the table alone) a key of zeros and term 1.
   */
  constructor(options: { writeSeq: WriteSeqSource; recoveredWriteSeqMax?: bigint; tags?: GrantTags; term?: bigint }) {
    this.#writeSeq = options.writeSeq;
    const max = options.recoveredWriteSeqMax ?? WRITE_SEQ_MAX;
    this.#recoveredWriteSeqMax = max < WRITE_SEQ_MAX ? max : WRITE_SEQ_MAX;
    this.#tags = options.tags ?? new GrantTags(new Uint8Array(GRANT_TAG_KEY_BYTES));
    this.#term = options.term ?? 1n;
  }

  get recovering(): boolean {
    return this.#recovering;
  }

  /** Number of keys with state, and of entries (for memory benchmarks and "table is empty" checks). */
  get keyCount(): number {
    return this.#nodes.size;
  }

  get entryCount(): number {
    return this.#entryCount;
  }

  /** Keys whose head write/write_only request waits for the write seq source (at most; some may have gone since). */
  get keysWaitingForWriteSeqs(): number {
    return this.#seqWaiting.size;
  }

  /** What `rid` has in the table now (zeros when nothing); O(1). */
  clientLoad(rid: Rid): Readonly<ClientLoad> {
    // The record counted last is usually this client's (the driver asks before each request): no lookup.
    if (rid === this.#lastLoadRid && this.#lastLoad !== undefined) return this.#lastLoad;
    return this.#loads.get(rid) ?? NO_LOAD;
  }

  /**
   * Length of `rid`'s key list (0 without entries): at least the number of keys it has entries on, at
   * most 2 × its entries + 16 right after a key was last added (for tests of that bound).
   */
  clientKeyListLength(rid: Rid): number {
    return this.#loads.get(rid)?.keys.length ?? 0;
  }

  /** Whether `rid` has any entry (granted, requested or invalidated) on `key`. */
  hasEntry(rid: Rid, key: Key): boolean {
    const node = this.#nodes.get(key);
    if (node === undefined) return false;
    if (Array.isArray(node)) return node[0]!.rid === rid;
    return indexOfRid(node.granted, rid) >= 0 || indexOfRid(node.requested, rid) >= 0 || indexOfRid(node.invalidated, rid) >= 0;
  }

  /** `key`'s node (made from a recovered key's bare list, see #nodes), or undefined when the key has no state. */
  #node(key: Key): LockNode | undefined {
    const slot = this.#nodes.get(key);
    if (slot === undefined || !Array.isArray(slot)) return slot;
    const node = new LockNode();
    node.granted = slot;
    this.#nodes.set(key, node);
    return node;
  }

  /** The ordered index of keys, up to date (for tests: its comparison counter and size). */
  get keyIndex(): KeyIndex {
    this.#indexDeferred();
    return this.#index;
  }

  /** Indexes the keys created while indexing was deferred (recovery); keeps deferring while recovery holds. */
  #indexDeferred(): void {
    const keys = this.#unindexed;
    if (keys === null) return;
    this.#unindexed = this.#recovering ? [] : null;
    const stale = this.#unindexedStale;
    this.#unindexedStale = false;
    if (keys.length === 0) return;
    // The default sort compares UTF-16 code units: for keys (one byte per unit) that is bytewise order.
    this.#index.insertSorted((stale ? keys.filter((key) => this.#nodes.has(key)) : keys).sort());
  }

  /**
   * Adds `delta` to rid's counters; the record goes when its last entry does (its key list with it).
   * Returns the record, or undefined when it went.
   */
  #count(rid: Rid, entries: number, requests: number, invalidated: number): ClientRecord | undefined {
    // One client's messages come in runs (a recovery batch, a burst of requests): remember the last record.
    let load = this.#lastLoadRid === rid ? this.#lastLoad : this.#loads.get(rid);
    if (load === undefined) {
      load = new ClientRecord();
      this.#loads.set(rid, load);
    }
    load.entries += entries;
    load.requests += requests;
    load.invalidated += invalidated;
    if (load.entries < 0 || load.requests < 0 || load.invalidated < 0) {
      const broken = load;
      invariant(false, () => `rid ${ridToHex(rid)}'s counters went negative (${broken.entries}, ${broken.requests}, ${broken.invalidated})`);
    }
    if (load.entries === 0) {
      this.#loads.delete(rid);
      this.#lastLoad = undefined;
      this.#lastLoadRid = undefined;
      return undefined;
    }
    this.#lastLoad = load;
    this.#lastLoadRid = rid;
    return load;
  }

  /**
   * Drops from rid's key list the keys it has no entry on, then, only if more are left than it has
   * entries (a key listed twice), the repeats (order kept). Called when an addition left the list longer
   * than 2 × entries + KEYS_SLACK: afterwards it is at most `entries` long, so at least
   * entries + KEYS_SLACK additions come before the next compaction, which costs O(list): amortised O(1)
   * per addition.
   */
  #compactKeys(rid: Rid, load: ClientRecord): void {
    const keys = load.keys;
    let kept = 0;
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      if (this.hasEntry(rid, key)) keys[kept++] = key;
    }
    if (kept > load.entries) {
      const seen = new Set<Key>();
      let unique = 0;
      for (let i = 0; i < kept; i++) {
        const key = keys[i]!;
        if (seen.has(key)) continue;
        seen.add(key);
        keys[unique++] = key;
      }
      kept = unique;
    }
    keys.length = kept;
  }

  #newNode(key: Key): LockNode {
    const node = new LockNode();
    this.#nodes.set(key, node);
    if (this.#unindexed !== null) this.#unindexed.push(key);
    else this.#index.insert(key);
    return node;
  }


  /**
   * A client asks for `request.newMode` on `request.key` (reference §3.3). The request queues behind
   * every earlier one; a noQueue request is admitted or refused now (DESIGN §4, `#admitsNoQueue`), and
   * once admitted waits for nobody but the requester itself. The client's oldMode is informational and
   * never trusted.
   */
  onRequest(rid: Rid, requestId: number, request: LockRequest): LockServerEffect[] {
    const problem = requestProblem(requestId, request);
    if (problem !== undefined) {
      const where =
        typeof request.key === "string" && keyFieldProblem(request.key) === undefined
          ? ` on key ${describeKey(request.key)}`
          : "";
      return [
        protocolError(
          rid,
          `lock request ${describeValue(requestId)} from rid ${ridToHex(rid)}${where}: ${problem}`,
        ),
      ];
    }
    const { key, newMode } = request;
    let node = this.#node(key);
    if (node !== undefined && indexOfRid(node.requested, rid) >= 0) {
      return [
        protocolError(
          rid,
          `lock request ${requestId} from rid ${ridToHex(rid)} on key ${describeKey(key)}: this client already has a request queued ` +
            `on this key (one outstanding request per client per key)`,
        ),
      ];
    }
    if (request.noQueue) {
      if (!this.#admitsNoQueue(node, rid, newMode)) {
        // Refused: this request is not queued and it invalidates no one. Counted on the key if it exists.
        if (node !== undefined) node.requests++;
        return [{ type: "refuse", rid, requestId, key, code: "EAGAIN" }];
      }
      // The requester's own null entry (only recovery leaves one) grants nothing; the grant supersedes it
      // without the null→null self-invalidation that would otherwise make a trylock fail.
      const own = node === undefined ? -1 : indexOfRid(node.granted, rid);
      if (own >= 0 && node!.granted![own]!.mode === "null") {
        node!.granted = withoutIndex(node!.granted!, own);
        this.#entryCount--;
        this.#count(rid, -1, 0, 0);
      }
    }
    // The client's key list has every key it has an entry on: a key goes on it only when the client had
    // none here (no request, checked above; no held or invalidated entry). A fresh key needs no look.
    const unlisted =
      node === undefined || (indexOfRid(node.granted, rid) < 0 && indexOfRid(node.invalidated, rid) < 0);
    node ??= this.#newNode(key);
    node.requests++;
    node.requested = appended(node.requested, new LockEntry(rid, newMode, requestId));
    this.#entryCount++;
    const load = this.#count(rid, 1, 1, 0)!;
    if (unlisted) {
      const listed = load.keys;
      listed.push(key);
      if (listed.length > 2 * load.entries + KEYS_SLACK) this.#compactKeys(rid, load);
    }
    const effects = this.#progressOn(key);
    // (Tested under `if` so the hot path allocates no message closure.)
    if (request.noQueue) invariant(
      effects.length > 0 && effects.every((e) => (e.type === "grant" || e.type === "invalidate") && e.rid === rid),
      () =>
        `noQueue request ${requestId} from rid ${ridToHex(rid)} on key ${describeKey(key)} was admitted but neither ` +
        `granted at once nor waiting only on its own invalidation`,
    );
    return effects;
  }

  /** The client's echo of an invalidation it finished (newMode is the mode it now holds). Reference §3.4. */
  onInvalidateResponse(rid: Rid, response: LockInvalidation): LockServerEffect[] {
    // The texts of refusals are made only for a refusal (a rid in hex and a quoted key per answer cost more
    // than the rest of this method): `responseContext`, `responseWhere`.
    const keyProblem = keyFieldProblem(response.key);
    if (keyProblem !== undefined) return [protocolError(rid, `${responseContext(rid)}: ${keyProblem}`)];
    const { key, newMode } = response;
    if (modeCode(newMode) < 0) return [protocolError(rid, `${responseWhere(rid, key)}: invalid mode ${describeValue(newMode)}`)];
    if (modeCode(response.oldMode) < 0)
      return [protocolError(rid, `${responseWhere(rid, key)}: invalid old mode ${describeValue(response.oldMode)}`)];
    const slot = this.#nodes.get(key);
    if (slot === undefined)
      return [protocolError(rid, `${responseWhere(rid, key)}: unknown lock (the server has no state for this key)`)];
    // A bare recovered list (#nodes) has nothing invalidated.
    const node = Array.isArray(slot) ? undefined : slot;
    const index = node === undefined ? -1 : indexOfRid(node.invalidated, rid);
    if (node === undefined || index < 0) {
      return [
        protocolError(
          rid,
          `${responseWhere(rid, key)}: unknown entry (no invalidation is outstanding for this client on this key)`,
        ),
      ];
    }
    const entry = node.invalidated![index]!;
    if (newMode !== "null" && !(entry.mode === "write" && newMode === "read")) {
      return [
        protocolError(
          rid,
          `${responseWhere(rid, key)}: mode ${describeValue(newMode)} is not a downgrade of ${describeValue(entry.mode)}`,
        ),
      ];
    }
    node.responses++;
    node.invalidated = withoutIndex(node.invalidated!, index);
    if (newMode === "null") {
      this.#entryCount--;
      this.#count(rid, -1, 0, -1);
    } else {
      this.#count(rid, 0, 0, -1);
      node.granted = appended(node.granted, new LockEntry(rid, newMode, entry.requestId));
    }
    return this.#progressOn(key);
  }

  /**
   * Recovery: the client reports locks it holds; each becomes a granted entry (mode may be null); write
   * seqs are observed. Reference §5.4. Only while the recovery hold is in effect. The whole batch is
   * checked first and refused as one (a protocol-error for `rid`, nothing of the batch recovered) when
   * any report is malformed, carries a write seq above `recoveredWriteSeqMax`, names a key twice or one
   * the client already holds, or loses a conflict with what another client reported for the key
   * (modes.ts `compatible`: e.g. two writers).
   *
   * Conflicts (known finding F1, DESIGN §9): honest reports never conflict, since they describe one
   * consistent table of the dead server; a conflict means one side lies. Each side's grant proof
   * (core/grant-tags.ts) decides: a report whose proof does not verify, or whose grant is earlier than
   * the other side's (that side was granted the key after it), loses. A losing newcomer's batch is
   * refused. A losing holder, whose report came first, is refuted: its entry on the key is dropped (a
   * `refuted` effect: the driver closes its connection and has it fenced) and the newcomer's report is
   * checked again, against whoever else holds the key. So a client can never make the server refuse an
   * honest client's truthful report by reporting first, whatever it claims. Refutations stand even when
   * the newcomer's batch is then refused for another of its reports: a later verified grant of the key
   * proves the holder's claim stale whoever shows it.
   * Nothing is granted or invalidated here: the hold is in effect.
   */
  onRecoverBatch(rid: Rid, locks: readonly RecoveredLock[]): LockServerEffect[] {
    if (!this.#recovering) return [protocolError(rid, `recovery batch from rid ${ridToHex(rid)}: no lock recovery is in progress`)];
    // The `refuted` effects of holders this batch's reports proved stale (none but for a liar's).
    const refuted: LockServerEffect[] = [];
    const problem = this.#recoverBatchProblem(rid, locks, refuted);
    if (problem !== undefined) {
      refuted.push(protocolError(rid, `recovery batch from rid ${ridToHex(rid)} refused, nothing recovered: ${problem}`));
      return refuted;
    }
    // #recoverBatchProblem left each key's node (or undefined) in #recoverNodes and the batch's highest
    // write seq in #recoverSeqMax: one map lookup per lock, one counter update and one observe per batch.
    // Every key the batch reports in one mode gets the same entry, in the same one-entry list where it is
    // the key's only holder (entries are immutable; one-entry lists are never changed in place): a new
    // key costs its map slot, with no node, entry or list of its own.
    const nodes = this.#recoverNodes;
    const count = locks.length;
    const shared = this.#recoverLists;
    for (let i = 0; i < count; i++) {
      const lock = locks[i]!;
      const mode = lock.mode;
      const m = modeCode(mode);
      const list = shared[m] ?? (shared[m] = [new LockEntry(rid, mode, 0)]);
      const slot = nodes[i];
      if (slot === undefined) {
        // A new key: only its list in the table (#nodes), no node until something happens on it.
        this.#nodes.set(lock.key, list);
        this.#unindexed!.push(lock.key);
        continue;
      }
      nodes[i] = undefined;
      if (Array.isArray(slot)) {
        const node = new LockNode();
        node.granted = [slot[0]!, list[0]!];
        this.#nodes.set(lock.key, node);
      } else slot.granted = slot.granted === undefined ? list : appended(slot.granted, list[0]!);
    }
    shared.fill(undefined);
    if (count === 0) return refuted;
    const claims = this.#claims!;
    const batches = claims.get(rid);
    if (batches === undefined) claims.set(rid, [new BatchClaims(locks)]);
    else batches.push(new BatchClaims(locks));
    this.#entryCount += count;
    const load = this.#count(rid, count, 0, 0)!;
    const listed = load.keys;
    for (let i = 0; i < count; i++) listed.push(locks[i]!.key);
    if (listed.length > 2 * load.entries + KEYS_SLACK) this.#compactKeys(rid, load);
    const seqMax = this.#recoverSeqMax;
    this.#writeSeq.observe(seqMax);
    if (seqMax > this.#writeSeqFloor) this.#writeSeqFloor = seqMax;
    return refuted;
  }

  /**
   * Why a recovery batch must be refused (onRecoverBatch), or undefined. Changes nothing in the table
   * but the entries of holders it refutes (their effects appended to `refuted`);
   * leaves each lock's node (undefined for a new key) in #recoverNodes and the highest write seq in
   * #recoverSeqMax for onRecoverBatch. Keys in strictly ascending order (an honest client's, and all the
   * codec lets through) cannot repeat; only a batch out of order is checked against a set of its keys.
   */
  #recoverBatchProblem(rid: Rid, locks: readonly RecoveredLock[], refuted: LockServerEffect[]): string | undefined {
    const nodes = this.#recoverNodes;
    const writeSeqMax = this.#recoveredWriteSeqMax;
    let seen: Set<Key> | null = null;
    let previous = "";
    let seqMax = 0n;
    const count = locks.length;
    for (let i = 0; i < count; i++) {
      const lock = locks[i]!;
      const problem = recoveredLockProblem(lock, writeSeqMax);
      if (problem !== undefined) return this.#recoverRefused(i, problem);
      const key = lock.key;
      if (seen === null && i > 0 && !(key > previous)) seen = new Set(locks.slice(0, i).map((l) => l.key));
      if (seen !== null) {
        // describeKey only for a refusal: this loop runs once per recovered lock (a million after a restart).
        if (seen.has(key)) return this.#recoverRefused(i, `key ${describeKey(key)} is reported twice`);
        seen.add(key);
      }
      previous = key;
      if (lock.writeSeq > seqMax) seqMax = lock.writeSeq;
      // Each round either finds no conflict, refuses the batch, or refutes one holder (the key then has
      // one entry fewer): it ends.
      for (;;) {
        const slot = this.#nodes.get(key);
        nodes[i] = slot;
        if (slot === undefined) break;
        const granted = Array.isArray(slot) ? slot : slot.granted;
        const invalidated = Array.isArray(slot) ? undefined : slot.invalidated;
        if (indexOfRid(granted, rid) >= 0 || indexOfRid(invalidated, rid) >= 0) {
          return this.#recoverRefused(i + 1, `key ${describeKey(key)} is reported while this client already holds it`);
        }
        const conflict = conflictingHolder(granted, lock.mode) ?? conflictingHolder(invalidated, lock.mode);
        if (conflict === undefined) break;
        const loses = this.#whyReportLoses(rid, lock, conflict.rid, conflict.mode);
        if (loses !== undefined) {
          return this.#recoverRefused(
            i + 1,
            `key ${describeKey(key)} is reported in mode ${lock.mode}, which conflicts with ${conflict.mode} held by rid ${ridToHex(conflict.rid)}: ${loses}`,
          );
        }
        refuted.push(this.#refute(conflict.rid, key, rid));
      }
    }
    this.#recoverSeqMax = seqMax;
    return undefined;
  }

  /**
   * Why `rid`'s report `lock` loses its conflict with `holder`'s entry on the key (onRecoverBatch), or
   * undefined when the holder's loses: this report's proof verifies, and the holder's does not or names
   * an earlier grant.
   */
  #whyReportLoses(rid: Rid, lock: RecoveredLock, holder: Rid, heldMode: LockMode): string | undefined {
    const tags = this.#tags;
    if (!tags.verify(rid, lock)) return "this report's grant proof does not verify";
    const held = this.#claimOf(holder, lock.key, heldMode);
    if (held === undefined || !tags.verify(holder, held)) return undefined;
    if (grantIsLater(lock.grantTerm, lock.grantNo, held.grantTerm, held.grantNo)) return undefined;
    return `that client's grant (term ${held.grantTerm}, grant ${held.grantNo}) is not earlier than this report's (term ${lock.grantTerm}, grant ${lock.grantNo})`;
  }

  /** The proof `rid` reported for `key` (held in `mode`) in a batch this recovery accepted, or undefined. Only on a conflict. */
  #claimOf(rid: Rid, key: Key, mode: LockMode): GrantClaim | undefined {
    const batches = this.#claims?.get(rid);
    if (batches === undefined) return undefined;
    for (const batch of batches) {
      const at = batch.indexOf(key);
      if (at >= 0) return { key, mode, grantTerm: batch.termOf(at), grantNo: batch.proofs[2 * at]!, grantTag: batch.proofs[2 * at + 1]! };
    }
    return undefined;
  }

  /**
   * Drops `holder`'s entry on `key` (recovery: `by`'s report proved it stale or forged) and returns the
   * `refuted` effect. The key goes when nothing else is on it, as in #makeProgress.
   */
  #refute(holder: Rid, key: Key, by: Rid): LockServerEffect {
    const slot = this.#nodes.get(key)!;
    let invalidated = 0;
    let mode: LockMode;
    let gone: boolean;
    if (Array.isArray(slot)) {
      mode = slot[0]!.mode;
      gone = true;
    } else {
      const index = indexOfRid(slot.granted, holder);
      if (index >= 0) {
        mode = slot.granted![index]!.mode;
        slot.granted = withoutRid(slot.granted, holder);
      } else {
        mode = slot.invalidated![indexOfRid(slot.invalidated, holder)]!.mode;
        slot.invalidated = withoutRid(slot.invalidated, holder);
        invalidated = -1;
      }
      gone = isEmpty(slot);
    }
    if (gone) {
      this.#nodes.delete(key);
      if (!this.#index.delete(key) && this.#unindexed !== null) this.#unindexedStale = true;
    }
    this.#entryCount--;
    this.#count(holder, -1, 0, invalidated);
    const error = new ProtocolError(
      `recovery report of key ${describeKey(key)} in mode ${mode} refuted: rid ${ridToHex(by)} proved a later grant of the key, ` +
        `and this client's report is stale or its grant proof does not verify`,
    );
    return { type: "refuted", rid: holder, key, error };
  }

  /** Clears the nodes #recoverBatchProblem kept (the first `kept`) and returns the refusal. */
  #recoverRefused(kept: number, problem: string): string {
    this.#recoverNodes.fill(undefined, 0, kept);
    return problem;
  }

  /**
   * Farewell or reclaim: remove every entry of rid on every key, then make progress on each touched key
   * (in key order). Idempotent: a second call finds nothing and returns no effects. Reference §3.8.
   * Visits only the client's key list (no more than 2 × entries + 16 keys right after its last addition).
   * A touched key left with no entry is deleted here (its index entries in one sorted pass,
   * KeyIndex.deleteSorted); one left with a queued request goes through #makeProgress, in key order; one
   * left with holders or outstanding invalidations alone has no decision to take (#makeProgress would
   * change nothing on it): the same effects, in the same order, as progress on every touched key.
   */
  onClientGone(rid: Rid): LockServerEffect[] {
    const record = this.#loads.get(rid);
    if (record === undefined) return [];
    const nodes = this.#nodes;
    const progress: Key[] = [];
    const emptied: Key[] = [];
    // The client's counters say how many entries to find: the walk stops at the last.
    let left = record.entries;
    const listed = record.keys;
    for (let i = 0; i < listed.length && left > 0; i++) {
      const key = listed[i]!;
      // A key listed twice was emptied of this client's entries the first time; a stale one has none.
      const node = nodes.get(key);
      if (node === undefined) continue;
      if (Array.isArray(node)) {
        // A recovered key nothing happened on since: the client was its only holder, or holds nothing here.
        if (node[0]!.rid !== rid) continue;
        nodes.delete(key);
        emptied.push(key);
        left--;
        continue;
      }
      const { granted, requested, invalidated } = node;
      if (requested === undefined && invalidated === undefined && granted !== undefined && granted.length === 1) {
        // The usual departure: the client was the key's only holder (nothing queued, nothing invalidated).
        if (granted[0]!.rid !== rid) continue;
        nodes.delete(key);
        emptied.push(key);
        left--;
        continue;
      }
      const had = (granted?.length ?? 0) + (requested?.length ?? 0) + (invalidated?.length ?? 0);
      node.granted = withoutRid(granted, rid);
      node.requested = withoutRid(requested, rid);
      node.invalidated = withoutRid(invalidated, rid);
      const removed = had - ((node.granted?.length ?? 0) + (node.requested?.length ?? 0) + (node.invalidated?.length ?? 0));
      if (removed === 0) continue;
      left -= removed;
      if (isEmpty(node)) {
        nodes.delete(key);
        emptied.push(key);
      } else if (node.requested !== undefined) progress.push(key);
    }
    invariant(left === 0, () => `rid ${ridToHex(rid)}'s entry counter was ${left} above its entries in the table`);
    this.#entryCount -= record.entries;
    this.#loads.delete(rid);
    if (this.#lastLoadRid === rid) {
      this.#lastLoad = undefined;
      this.#lastLoadRid = undefined;
    }
    if (emptied.length > 0) {
      // A client's keys are usually listed in order already (a recovery's batches, keys taken in order):
      // then no sort. The default sort compares UTF-16 code units: for keys (one byte per unit) that is
      // bytewise order. Keys not in the index are in #unindexed (recovery defers indexing): filter it
      // before indexing.
      if (!ascending(emptied)) emptied.sort();
      if (this.#index.deleteSorted(emptied) < emptied.length && this.#unindexed !== null) this.#unindexedStale = true;
    }
    const effects: LockServerEffect[] = [];
    if (progress.length > 0) {
      progress.sort(compareKeys);
      for (const key of progress) this.#makeProgress(key, effects);
    }
    return effects;
  }

  /**
   * The write seq source has tokens again (a reservation landed): makes progress, in key order, on every
   * key whose head request was waiting for one. A key that runs out again waits again. Idempotent.
   */
  onWriteSeqsAvailable(): LockServerEffect[] {
    if (this.#seqWaiting.size === 0) return [];
    const keys = [...this.#seqWaiting].sort(compareKeys);
    this.#seqWaiting.clear();
    const effects: LockServerEffect[] = [];
    for (const key of keys) this.#makeProgress(key, effects);
    return effects;
  }

  /** Recovery gate: while held, nothing is granted or invalidated on any key (requests still queue). */
  holdForRecovery(): void {
    this.#recovering = true;
    this.#unindexed ??= [];
    this.#claims ??= new Map();
  }

  /** Ends the hold and makes progress on every key with queued requests, in key order. */
  resumeAfterRecovery(): LockServerEffect[] {
    this.#recovering = false;
    this.#claims = null;
    this.#indexDeferred();
    const waiting: Key[] = [];
    for (const [key, node] of this.#nodes) if (!Array.isArray(node) && node.requested !== undefined) waiting.push(key);
    waiting.sort(compareKeys);
    const effects: LockServerEffect[] = [];
    for (const key of waiting) this.#makeProgress(key, effects);
    return effects;
  }

  /** Every entry, sorted by key, then granted, requested, invalidated, each in list order. */
  dump(): LockEntryView[] {
    const views: LockEntryView[] = [];
    this.#indexDeferred();
    for (const key of this.#index.after(null)) views.push(...this.entriesOf(key));
    return views;
  }

  /** Per-key message counters, sorted by key (reference §3.7). */
  stats(): LockStatsView[] {
    const views: LockStatsView[] = [];
    this.#indexDeferred();
    for (const key of this.#index.after(null)) views.push(this.statsOf(key)!);
    return views;
  }

  /**
   * The keys with state strictly after `after` (every key when null), in key order: O(log n) to start,
   * O(1) per key (admin pages). Finish or drop the iteration before changing the table.
   */
  keysAfter(after: Key | null): Iterator<Key> {
    this.#indexDeferred();
    return this.#index.after(after);
  }

  /** One key's entries: granted, requested, invalidated, each in list order (none when the key has no state). */
  entriesOf(key: Key): LockEntryView[] {
    const node = this.#nodes.get(key);
    if (node === undefined) return [];
    const views: LockEntryView[] = [];
    const lists = Array.isArray(node)
      ? ([["granted", node]] as const)
      : ([
          ["granted", node.granted],
          ["requested", node.requested],
          ["invalidated", node.invalidated],
        ] as const);
    for (const [state, list] of lists) {
      for (const entry of list ?? []) views.push({ key, rid: entry.rid, mode: entry.mode, state, requestId: entry.requestId });
    }
    return views;
  }

  /** One key's message counters, or undefined when the key has no state. */
  statsOf(key: Key): LockStatsView | undefined {
    const node = this.#nodes.get(key);
    if (node === undefined) return undefined;
    if (Array.isArray(node)) return { key, requests: 0, invalidations: 0, responses: 0, grants: 0 };
    return { key, requests: node.requests, invalidations: node.invalidations, responses: node.responses, grants: node.grants };
  }

  /**
   * Whether a noQueue request is admitted (DESIGN §4): no recovery hold, nothing queued or invalidated
   * on the key, and every granted entry it conflicts with belongs to the requester. Its own conflicting
   * grant does not refuse it: that entry is self-invalidated like for any request, and the requester,
   * which holds no handle in the way, answers without waiting for anyone else.
   */
  #admitsNoQueue(node: LockNode | undefined, rid: Rid, mode: LockMode): boolean {
    if (this.#recovering) return false;
    // No token in hand: the grant would have to wait for the store, which a trylock does not do.
    if (carriesWriteSeq(mode) && !this.#writeSeq.available()) return false;
    if (node === undefined) return true;
    if (node.requested !== undefined || node.invalidated !== undefined) return false;
    for (const holder of node.granted ?? []) {
      if (holder.rid !== rid && !compatible(holder.mode, mode, false)) return false;
    }
    return true;
  }

  /**
   * The one place grants and invalidations are decided (reference §3.5). Runs after every change to the
   * key. Stops while recovery holds the table or any invalidation on the key is outstanding; otherwise
   * takes requests oldest first: the head either invalidates every conflicting holder at once (and
   * waits for them), or is granted. Deletes the key once its lists are empty.
   * A write or write_only head is considered only while the write seq source has a token available:
   * otherwise the key is left exactly as it is (nothing invalidated, the request still queued) and
   * remembered until `onWriteSeqsAvailable` (DESIGN §9: nothing changes before the token is in hand).
   */
  /**
   * `#makeProgress` on one key, its effects returned in an array of their number: they are collected in
   * `#progressEffects`, kept across calls, so a request's one grant does not grow a fresh array to
   * JavaScript's first capacity (17 slots) as pushing into `[]` would.
   */
  #progressOn(key: Key): LockServerEffect[] {
    const collected = this.#progressEffects;
    // Empty between calls; only an invariant thrown during the last one can have left effects behind.
    if (collected.length !== 0) collected.length = 0;
    this.#makeProgress(key, collected);
    // Emptied by pop, not `length = 0`: shrinking by length gives the backing store back (the next push
    // would grow it again).
    if (collected.length === 1) return [collected.pop()!];
    const effects = collected.slice();
    while (collected.length > 0) collected.pop();
    return effects;
  }

  #makeProgress(key: Key, effects: LockServerEffect[]): void {
    const node = this.#nodes.get(key);
    // A bare recovered list (#nodes) has one holder and nothing queued: no decision to take.
    if (node === undefined || Array.isArray(node)) return;
    while (!this.#recovering && node.invalidated === undefined && node.requested !== undefined) {
      const request = node.requested[0]!;
      if (carriesWriteSeq(request.mode) && !this.#writeSeq.available()) {
        this.#seqWaiting.add(key);
        break;
      }
      this.#invalidateConflicting(key, node, request, effects);
      if (node.invalidated !== undefined) break;
      this.#grantHead(key, node, effects);
    }
    if (isEmpty(node)) {
      this.#nodes.delete(key);
      if (!this.#index.delete(key) && this.#unindexed !== null) this.#unindexedStale = true;
    }
  }

  /** Moves every granted entry that conflicts with `request` to invalidated, in list order, asking each holder to downgrade. */
  #invalidateConflicting(key: Key, node: LockNode, request: LockEntry, effects: LockServerEffect[]): void {
    const granted = node.granted;
    if (granted === undefined) return;
    if (granted.length === 1) {
      // A one-entry list is never changed in place (it may be shared): kept whole or dropped.
      const holder = granted[0]!;
      if (compatible(holder.mode, request.mode, holder.rid === request.rid)) return;
      this.#invalidate(key, node, holder, request, effects);
      node.granted = undefined;
      return;
    }
    let kept = 0;
    for (const holder of granted) {
      if (compatible(holder.mode, request.mode, holder.rid === request.rid)) {
        granted[kept++] = holder;
        continue;
      }
      this.#invalidate(key, node, holder, request, effects);
    }
    granted.length = kept;
    if (kept === 0) node.granted = undefined;
  }

  /** Asks `holder` to downgrade for `request` and moves it to the key's invalidated list (the caller drops it from granted). */
  #invalidate(key: Key, node: LockNode, holder: LockEntry, request: LockEntry, effects: LockServerEffect[]): void {
    const invalidation: LockInvalidation = {
      key,
      oldMode: holder.mode,
      newMode: invalidationMode(holder.mode, request.mode),
    };
    effects.push({ type: "invalidate", rid: holder.rid, invalidation });
    node.invalidations++;
    node.invalidated = appended(node.invalidated, holder);
    this.#count(holder.rid, 0, 0, 1);
  }

  /** Grants the head request: it replaces the requester's own granted entry; a null grant is forgotten. */
  #grantHead(key: Key, node: LockNode, effects: LockServerEffect[]): void {
    // The invariants are tested under `if`: no message closure is allocated on the hot path.
    if (node.invalidated !== undefined)
      invariant(false, () => `grant on key ${describeKey(key)} while invalidations are outstanding`);
    const requested = node.requested!;
    const request = requested[0]!;
    // A lone request's array becomes the granted list below when that is empty (one array fewer).
    let spare: LockEntry[] | undefined;
    if (requested.length === 1) {
      node.requested = undefined;
      spare = requested;
    } else {
      node.requested = withoutIndex(requested, 0);
    }
    let oldMode: LockMode = "null";
    const own = indexOfRid(node.granted, request.rid);
    let gone = 0;
    if (own >= 0) {
      oldMode = node.granted![own]!.mode;
      node.granted = withoutIndex(node.granted!, own);
      this.#entryCount--;
      gone++;
    }
    if (indexOfRid(node.granted, request.rid) >= 0)
      invariant(false, () => `rid ${ridToHex(request.rid)} had two granted entries on key ${describeKey(key)}`);
    const mode = request.mode;
    const writeSeq = carriesWriteSeq(mode) ? this.#nextWriteSeq() : 0n;
    let grant: LockGrant;
    if (mode === "null") grant = { key, oldMode, newMode: mode, writeSeq, grantTerm: 0n, grantNo: 0, grantTag: 0 };
    else {
      const grantNo = ++this.#grantCount;
      const grantTag = this.#tags.tag(request.rid, key, mode, this.#term, grantNo);
      grant = { key, oldMode, newMode: mode, writeSeq, grantTerm: this.#term, grantNo, grantTag };
    }
    effects.push({ type: "grant", rid: request.rid, requestId: request.requestId, grant });
    node.grants++;
    if (request.mode === "null") {
      this.#entryCount--;
      gone++;
    } else if (node.granted === undefined && spare !== undefined) {
      node.granted = spare; // [request] already
    } else node.granted = appended(node.granted, request);
    this.#count(request.rid, -gone, -1, 0);
  }

  #nextWriteSeq(): bigint {
    const seq = this.#writeSeq.next();
    const floor = this.#writeSeqFloor;
    if (seq <= floor)
      invariant(false, () => `write seq source returned ${seq}, not above ${floor} (handed out or recovered before)`);
    this.#writeSeqFloor = seq;
    return seq;
  }
}
