/**
 * The server machine (issue 10): what the lock server decides about its clients, as a pure machine of
 * inputs and effects, beside the lock table (lock-server.ts), which it never touches. The driver
 * (runtime/server.ts) checks proofs, runs the store, the fence agent, timers and sockets, feeds the
 * results back as inputs, and carries out the effects in the order they come.
 *
 * It owns: greeting classification to a session (new client, first contact, reconnect, farewell retry,
 * forgotten, refusals), the client registry (who has a record, a session, a connection, who is leaving,
 * fenced, reclaimed), the recovery tracker (recovery.ts) and the fence tracker (fencing.ts), record
 * writes, and the recovery and reconnect deadlines.
 *
 * Guarantees:
 * - Record writes of one client run one at a time, in the order decided: each `persist-record` /
 *   `delete-record` effect is answered by `record-persisted` / `record-deleted` (or `record-failed`)
 *   before the next write of that rid is emitted, so an insert can never land after its reclaim's delete.
 *   A greeting that must see a record (persist before you promise) waits for the rid's writes to land.
 * - Greetings (reference §6.6, §6.11): a client whose identity proof failed, whose rid is fenced or was
 *   reclaimed (except to resend a farewell), whom this server forgot, or who met a newer server, is
 *   refused with a `refuse-greeting` effect and nothing is recorded for it. A fresh rid with a verified
 *   claim proof is recorded before it is answered; a resent first greeting (B21) finds the first one's
 *   keys and record, and replaces its session.
 * - Farewell (B5): a farewell waits until that client's lock recovery finished; then its lock entries go
 *   (`forget-locks`), then its record is deleted, and only then is it answered (`answer-farewell`).
 * - Fencing (B37): a rid is fenced at most once at a time (the fence tracker dedups); a fenced rid's
 *   session is dropped at once. Reclaims run one at a time, oldest fence first: record deleted first,
 *   then the lock entries (`forget-locks`), then the fence is freed and the rid's recovery finished
 *   (`reclaim` below explains why the record goes first). A failed fence or record write is `fatal`.
 * - Recovery (reference §5): `start` holds the lock table while any recorded client must greet and report
 *   its locks; `resume-locks` comes exactly once, when the last one finished (greeted and reported, left,
 *   or reclaimed); at the recovery deadline every client still pending is fenced (client_recovery).
 * - Deadlines are `set-timer` / `clear-timer` effects answered by `timeout` inputs; a timeout for a timer
 *   the machine did not arm (or cleared) changes nothing.
 * - `stop` forgets everything (B36, B38: no recovery or fence state outlives a server); every input after
 *   it changes nothing, and a greeting after it is refused ESHUTDOWN.
 * - Nothing an input carries throws: an input that names an unknown rid, a connection that is not the
 *   client's, a write nobody asked for, or a farewell from a client without a session is answered with a
 *   `refused-input` effect (the driver logs it) and changes nothing. Only a broken internal invariant throws.
 *
 * Relies on: the driver verifying every proof before the greeting input (it passes the keys it verified
 * against, read from `keysOf` right before), giving connections unique numbers, answering each record
 * effect exactly once, and delivering one client's lock traffic only while `session(rid)` says it may.
 * Across failover: nothing here survives a server; the next one starts from the durable records.
 */
import { ridToHex } from "./keys.js";
import { FenceTracker, type FenceReason, type FenceRequest } from "./fencing.js";
import { RecoveryTracker } from "./recovery.js";
import { classifyGreeting, type GreetingClass } from "./session.js";

type Rid = bigint;

/** The public keys a greeting for a rid must prove (hex, "" for none: records older than greeting v2). */
export interface ClientKeys {
  readonly resumeKey: string;
  readonly claimKey: string;
}

/** The process found to own a client's connection when its session began (never the greeting's pid). */
export interface ClientOwner {
  readonly pid: number;
  readonly start: string;
}

/** A durable client record as the machine needs it (from the store at start). */
export interface RecordedClient extends ClientKeys {
  readonly rid: Rid;
  readonly address: string;
  readonly pid: number;
  readonly pidStart: string;
}

/** What the driver verified of a greeting's identity proof before handing it in. */
export type IdentityCheck =
  /**
   * The rid has keys (`keysOf`, or the store's record): whether the proof verified under them, and
   * (`claimOk`, absent = false) whether it verified under the greeting's own claim key instead: a client
   * with a claim of its own, greeting a rid someone else's record holds.
   */
  | { readonly kind: "known"; readonly keys: ClientKeys; readonly ok: boolean; readonly claimOk?: boolean }
  /**
   * No keys known anywhere: whether the proof verified under the greeting's own claim key, and, when it did
   * and the greeting is a first one, fresh keys (a new resumption key pair) for the machine to record.
   */
  | { readonly kind: "unknown"; readonly claimOk: boolean; readonly fresh: ClientKeys | null };

export interface GreetingInput {
  readonly type: "greeting";
  /** The driver's number for this greeting (answers name it). */
  readonly greeting: number;
  /** The driver's number for the connection it arrived on. */
  readonly conn: number;
  readonly rid: Rid;
  readonly name: string;
  readonly address: string;
  readonly farewell: boolean;
  readonly lastServerTerm: bigint;
  readonly owner: ClientOwner | null;
  readonly identity: IdentityCheck;
  readonly nowMs: number;
}

export type TimerId = "recovery" | `reconnect:${string}`;

export type ServerInput =
  | GreetingInput
  /** A client's connection closed (the driver already detached it). */
  | { readonly type: "disconnected"; readonly rid: Rid; readonly conn: number; readonly reason: string }
  | { readonly type: "farewell"; readonly rid: Rid; readonly id: number }
  /** The client finished reporting its locks (an empty batch), or its report is moot (it is leaving). */
  | { readonly type: "locks-recovered"; readonly rid: Rid }
  /** The client is stuck (an invalidation unanswered, a session over its limit): treated as vanished. */
  | { readonly type: "client-stuck"; readonly rid: Rid }
  /**
   * The lock table refuted the client's recovery report (core/lock-server.ts `refuted`: another client's
   * verified later grant proved it stale or forged): fenced (client_recovery) and reclaimed, like a client
   * that does not recover, whether or not it finished reporting.
   */
  | { readonly type: "recovery-refuted"; readonly rid: Rid; readonly reason: string }
  | { readonly type: "timeout"; readonly timer: TimerId }
  | { readonly type: "fence-done"; readonly rid: Rid }
  | { readonly type: "fence-failed"; readonly rid: Rid; readonly error: string }
  | { readonly type: "record-persisted"; readonly rid: Rid }
  | { readonly type: "record-deleted"; readonly rid: Rid }
  | { readonly type: "record-failed"; readonly rid: Rid; readonly error: string }
  | { readonly type: "stop" };

export type GreetingRefusal = "EAUTH" | "EFENCED" | "ESHUTDOWN" | "ENOTLEADER" | "ERIDTAKEN";

/** Why a record is deleted (the driver counts reclaims and names the cause in logs). */
export type DeletePurpose = "farewell" | "reclaim" | "fenced-greeting";

export type ServerEffect =
  | { readonly type: "refuse-greeting"; readonly greeting: number; readonly error: GreetingRefusal; readonly reason: string }
  /**
   * Accept: `resume` attaches the connection to the client's session and resends what it kept; `open`
   * starts a new session on it (`continuesPredecessor` for a farewell retry), answered with the fresh
   * resumption secret when `issue`, then asks for its locks when `requestLocks`.
   */
  | {
      readonly type: "accept-greeting";
      readonly greeting: number;
      readonly rid: Rid;
      readonly how: "resume" | "open";
      readonly continuesPredecessor: boolean;
      readonly issue: boolean;
      readonly requestLocks: boolean;
    }
  /** Drop the client's session: close its connection, clear its lock-traffic state. */
  | { readonly type: "drop-session"; readonly rid: Rid; readonly reason: string }
  /** Forget a departed session without closing anything (its connection is gone already). */
  | { readonly type: "forget-session"; readonly rid: Rid }
  | {
      readonly type: "persist-record";
      readonly rid: Rid;
      readonly name: string;
      readonly address: string;
      readonly owner: ClientOwner | null;
      readonly keys: ClientKeys;
      readonly greetedAtMs: number;
    }
  | { readonly type: "delete-record"; readonly rid: Rid; readonly purpose: DeletePurpose }
  /** Hold the lock table for recovery (at start). */
  | { readonly type: "hold-locks" }
  /** Remove the client's lock entries from the table, with progress on the keys (LockServer.onClientGone). */
  | { readonly type: "forget-locks"; readonly rid: Rid }
  /** Recovery finished: the lock table resumes (LockServer.resumeAfterRecovery). */
  | { readonly type: "resume-locks" }
  | { readonly type: "answer-farewell"; readonly rid: Rid; readonly ids: readonly number[] }
  | { readonly type: "set-timer"; readonly timer: TimerId; readonly ms: number }
  | { readonly type: "clear-timer"; readonly timer: TimerId }
  | { readonly type: "fence"; readonly rid: Rid; readonly address: string; readonly owner: ClientOwner | null; readonly reason: FenceReason }
  | { readonly type: "fatal"; readonly reason: string }
  | { readonly type: "log"; readonly level: "info" | "warn"; readonly line: string; readonly rid?: Rid }
  /** An input that does not fit the machine's state: changed nothing (the driver logs it). */
  | { readonly type: "refused-input"; readonly input: ServerInput["type"]; readonly reason: string };

/** A client's session as the driver may read it (lock traffic is ignored while `leaving`). */
export interface SessionView {
  readonly rid: Rid;
  readonly name: string;
  readonly address: string;
  readonly owner: ClientOwner | null;
  readonly conn: number | null;
  readonly leaving: boolean;
  readonly farewellDone: boolean;
  readonly keys: ClientKeys;
}

interface Session {
  readonly rid: Rid;
  name: string;
  address: string;
  owner: ClientOwner | null;
  conn: number | null;
  keys: ClientKeys;
  leaving: boolean;
  farewellDone: boolean;
  /** Farewell request ids waiting for this client's lock recovery (B5). */
  readonly farewellIds: number[];
}

/**
 * One record write (`then` runs when it lands, as part of the answering input), or a "step": no write, a
 * continuation that runs once the writes queued before it landed.
 */
interface RecordWrite {
  readonly op: "persist" | "delete" | "step";
  readonly effect: ServerEffect | null;
  readonly then: (out: ServerEffect[]) => void;
  readonly failed: (out: ServerEffect[], error: string) => void;
  emitted: boolean;
}

export interface ServerMachineOptions {
  readonly term: bigint;
  readonly reconnectTimeoutMs: number;
  readonly recoveryTimeoutMs: number;
  /** Whether the fence agent needs the process behind a connection (the driver looks it up when `needsOwner`). */
  readonly needsOwner?: boolean;
  /** The recovery tracker to use (default: a new one); the driver simulator wraps it for a mutation. */
  readonly recovery?: RecoveryTracker;
}

const EMPTY_KEYS: ClientKeys = { resumeKey: "", claimKey: "" };

function sameKeys(a: ClientKeys, b: ClientKeys): boolean {
  return a.resumeKey === b.resumeKey && a.claimKey === b.claimKey;
}

export function reconnectTimer(rid: Rid): TimerId {
  return `reconnect:${rid}`;
}

export class ServerMachine {
  readonly #options: ServerMachineOptions;
  readonly #recovery: RecoveryTracker;
  readonly #fences = new FenceTracker();
  readonly #sessions = new Map<Rid, Session>();
  /**
   * Durable records this server knows of (until deleted): from the store at start (`fromStart`: a client
   * of an earlier server), and those it wrote.
   */
  readonly #records = new Map<Rid, { address: string; owner: ClientOwner | null; keys: ClientKeys; fromStart: boolean }>();
  /** Keys of fresh rids whose first record write is in flight (a resent first greeting finds them, B21). */
  readonly #issuing = new Map<Rid, ClientKeys>();
  /** Clients this server reclaimed: never accepted again (except to resend a farewell). */
  readonly #reclaimed = new Set<Rid>();
  /** Record writes per rid, oldest first; the head one is in flight. */
  readonly #writes = new Map<Rid, RecordWrite[]>();
  readonly #timers = new Set<TimerId>();
  /** The rid being reclaimed (one at a time), or null. */
  #reclaiming: Rid | null = null;
  #started = false;
  #stopped = false;
  #recordedAtStart = 0;

  constructor(options: ServerMachineOptions) {
    this.#options = options;
    this.#recovery = options.recovery ?? new RecoveryTracker();
  }

  // ------------------------------------------------------------------ queries (pure reads)

  /** The keys a greeting for rid must prove, if this server knows them (session, record, or a record being written). */
  keysOf(rid: Rid): ClientKeys | null {
    return this.#sessions.get(rid)?.keys ?? this.#records.get(rid)?.keys ?? this.#issuing.get(rid) ?? null;
  }

  /** The process the durable record of rid names (a hint for the driver's process lookup), if any. */
  recordedOwner(rid: Rid): ClientOwner | null {
    return this.#records.get(rid)?.owner ?? null;
  }

  /** Whether the driver should look up the process behind a greeting's connection before handing it in. */
  needsOwner(greeting: { rid: Rid; lastServerTerm: bigint; farewell: boolean }): boolean {
    if (this.#options.needsOwner !== true || greeting.lastServerTerm > this.#options.term) return false;
    const beginning = this.#classify(greeting);
    return beginning !== "reconnect" && beginning !== "forgotten" && !this.#fences.has(greeting.rid);
  }

  session(rid: Rid): SessionView | undefined {
    return this.#sessions.get(rid);
  }

  /** Sessions not done with their farewell, any order. */
  liveSessions(): SessionView[] {
    return [...this.#sessions.values()].filter((s) => !s.farewellDone);
  }

  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** Whether rid must still report its locks (a recovery batch is only accepted then). */
  awaitsLocks(rid: Rid): boolean {
    return this.#recovery.isPending(rid, "locks");
  }

  get recovering(): boolean {
    return !this.#recovery.finished;
  }

  get recoveryPending(): number {
    return this.#recovery.finished ? 0 : this.#recovery.pendingCount;
  }

  /** Clients the store remembered at start (lock recovery's total). */
  get recoveryTotal(): number {
    return this.#recordedAtStart;
  }

  fences(): FenceRequest[] {
    return this.#fences.list();
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  // ------------------------------------------------------------------ start and inputs

  /** Prepares lock recovery for every recorded client (reference §5.2), before any greeting. */
  start(records: readonly RecordedClient[]): ServerEffect[] {
    const out: ServerEffect[] = [];
    if (this.#started || this.#stopped) return [{ type: "refused-input", input: "stop", reason: "the machine was started already" }];
    this.#started = true;
    for (const record of records) {
      const owner = record.pid === 0 ? null : { pid: record.pid, start: record.pidStart };
      this.#records.set(record.rid, { address: record.address, owner, keys: { resumeKey: record.resumeKey, claimKey: record.claimKey }, fromStart: true });
      this.#recovery.prepare(record.rid, ["greeting", "locks"]);
    }
    this.#recordedAtStart = records.length;
    if (records.length > 0) out.push({ type: "hold-locks" });
    if (this.#recovery.begin()) return out;
    const ms = this.#options.recoveryTimeoutMs;
    out.push({ type: "log", level: "info", line: `term ${this.#options.term}: waiting up to ${ms} ms for ${records.length} client(s) to recover their locks` });
    this.#setTimer(out, "recovery", ms);
    return out;
  }

  input(input: ServerInput): ServerEffect[] {
    const out: ServerEffect[] = [];
    if (this.#stopped) {
      if (input.type === "greeting") out.push({ type: "refuse-greeting", greeting: input.greeting, error: "ESHUTDOWN", reason: "the server is stopping" });
      return out;
    }
    if (!this.#started && input.type !== "stop") {
      out.push({ type: "refused-input", input: input.type, reason: "the machine has not started" });
      return out;
    }
    switch (input.type) {
      case "greeting":
        this.#onGreeting(out, input);
        break;
      case "disconnected":
        this.#onDisconnected(out, input.rid, input.conn, input.reason);
        break;
      case "farewell":
        this.#onFarewell(out, input.rid, input.id);
        break;
      case "locks-recovered":
        if (!this.#recovery.isPending(input.rid, "locks")) {
          out.push({ type: "refused-input", input: input.type, reason: `client ${ridToHex(input.rid)} owes no lock recovery` });
          break;
        }
        this.#finishRecovery(out, input.rid);
        break;
      case "client-stuck": {
        const session = this.#sessions.get(input.rid);
        if (session === undefined) {
          out.push({ type: "refused-input", input: input.type, reason: `no session for client ${ridToHex(input.rid)}` });
          break;
        }
        this.#fence(out, input.rid, session.address, session.owner, "client_reconnect");
        break;
      }
      case "recovery-refuted": {
        const session = this.#sessions.get(input.rid);
        const record = this.#records.get(input.rid);
        if (session === undefined && record === undefined) {
          out.push({ type: "refused-input", input: input.type, reason: `client ${ridToHex(input.rid)} has no session and no record` });
          break;
        }
        out.push({ type: "log", level: "warn", line: `client ${ridToHex(input.rid)}: ${input.reason}; fencing it`, rid: input.rid });
        this.#fence(out, input.rid, session?.address ?? record?.address ?? "unknown", session?.owner ?? record?.owner ?? null, "client_recovery");
        break;
      }
      case "timeout":
        this.#onTimeout(out, input.timer);
        break;
      case "fence-done":
      case "fence-failed":
        this.#onFenceOutcome(out, input);
        break;
      case "record-persisted":
      case "record-deleted":
      case "record-failed":
        this.#onRecordWritten(out, input);
        break;
      case "stop":
        this.#stop(out);
        break;
    }
    return out;
  }

  // ------------------------------------------------------------------ greetings

  #classify(greeting: { rid: Rid; lastServerTerm: bigint; farewell: boolean }): GreetingClass {
    return classifyGreeting(greeting, { term: this.#options.term, hasSession: this.#sessions.has(greeting.rid) });
  }

  #onGreeting(out: ServerEffect[], g: GreetingInput): void {
    const refuse = (error: GreetingRefusal, reason: string): void => {
      out.push({ type: "refuse-greeting", greeting: g.greeting, error, reason });
    };
    if (g.lastServerTerm > this.#options.term) {
      // The client already met a newer server: this one is stale and must not serve it.
      refuse("ENOTLEADER", `this server (term ${this.#options.term}) is older than one the client already met`);
      return;
    }
    const rid = g.rid;
    const beginning = this.#classify(g);
    if (beginning === "forgotten") {
      refuse("EFENCED", "this server forgot the client (it did not reconnect in time and was fenced)");
      return;
    }
    if (this.#fences.has(rid) || (this.#reclaimed.has(rid) && !g.farewell)) {
      refuse("EFENCED", "this client is being fenced");
      return;
    }
    // Identity (DESIGN §9): a rid with a session, a record or a record being written belongs to whoever
    // proves its resumption secret (or, until it received one, its claim seed).
    const current = this.keysOf(rid);
    const identity = g.identity;
    if (identity.kind === "known") {
      if (current !== null && !sameKeys(current, identity.keys)) {
        refuse("EAUTH", "the client's keys changed while it greeted: greet again");
        return;
      }
      if (!identity.ok) {
        const legacy = identity.keys.resumeKey === "" && identity.keys.claimKey === "";
        if (!legacy && identity.claimOk === true && g.lastServerTerm === 0n) {
          // A first greeting with a claim of its own, for a rid another claim holds: a stranger took the rid
          // (it saw it on the wire before it was recorded: known finding F2) or two clients drew the same
          // one. Say so, so that a client without a session under it draws another rid and greets again.
          refuse("ERIDTAKEN", "the rid is recorded for another client: greet again with another rid");
          return;
        }
        refuse(
          "EAUTH",
          legacy
            ? "this client's record predates protocol version 2 and cannot be resumed (it will be fenced and reclaimed)"
            : "no proof of this client's resumption secret: the rid belongs to another client",
        );
        return;
      }
      // Known keys: the rid's earlier writes (a first greeting's record, B21) land before it goes on.
      this.#afterWrites(out, rid, (o) => this.#greetingVerified(o, g, identity.keys, false));
      return;
    }
    if (current !== null) {
      refuse("EAUTH", "the client's keys changed while it greeted: greet again");
      return;
    }
    if (beginning === "new-client") {
      if (!identity.claimOk || identity.fresh === null) {
        refuse("EAUTH", "a first greeting needs a claim key and its identity proof");
        return;
      }
      // Persist before promising (B21: an existing record is success). The keys are known at once, so a
      // resent first greeting verifies against them and waits for this write.
      const keys = identity.fresh;
      this.#issuing.set(rid, keys);
      this.#write(out, rid, {
        op: "persist",
        effect: { type: "persist-record", rid, name: g.name, address: g.address, owner: g.owner, keys, greetedAtMs: g.nowMs },
        then: (o) => {
          this.#issuing.delete(rid);
          this.#records.set(rid, { address: g.address, owner: g.owner, keys, fromStart: false });
          this.#greetingVerified(o, g, keys, true);
        },
        failed: (o, error) => {
          this.#issuing.delete(rid);
          o.push({ type: "refuse-greeting", greeting: g.greeting, error: "ESHUTDOWN", reason: `the store failed: ${error}` });
        },
      });
      return;
    }
    if (!g.farewell) {
      // A client greeting a new server without a record was reclaimed (fenced) by an earlier server.
      refuse("EFENCED", "no record of this client: it was fenced and its locks were reclaimed");
      return;
    }
    this.#afterWrites(out, rid, (o) => this.#greetingVerified(o, g, EMPTY_KEYS, false)); // a resent farewell: nothing to protect
  }

  /** The greeting's identity holds (`issued`: this greeting's fresh keys were just recorded). */
  #greetingVerified(out: ServerEffect[], g: GreetingInput, keys: ClientKeys, issued: boolean): void {
    const refuse = (error: GreetingRefusal, reason: string): void => {
      out.push({ type: "refuse-greeting", greeting: g.greeting, error, reason });
    };
    const rid = g.rid;
    if (this.#fences.has(rid)) return refuse("EFENCED", "this client is being fenced");
    const existing = this.#sessions.get(rid);
    switch (this.#classify(g)) {
      case "forgotten":
        return refuse("EFENCED", "this server forgot the client (it did not reconnect in time and was fenced)");
      case "reconnect": {
        const session = existing!;
        this.#attach(out, session, g);
        out.push({ type: "accept-greeting", greeting: g.greeting, rid, how: "resume", continuesPredecessor: false, issue: false, requestLocks: false });
        return;
      }
      case "farewell-retry": {
        // The farewell was answered and the session dropped; the resent farewell will be answered again.
        this.#openSession(out, g, keys);
        out.push({ type: "accept-greeting", greeting: g.greeting, rid, how: "open", continuesPredecessor: true, issue: false, requestLocks: false });
        return;
      }
      case "new-client":
      case "first-contact": {
        const open = (o: ServerEffect[]): void => this.#openFirst(o, g, keys, issued);
        if (!issued && (this.#records.get(rid)?.fromStart === true || this.#recovery.isPending(rid))) {
          // A client of an earlier server: its record exists (B21: existing is success); written again in
          // this rid's order, so it is there when the client is answered, or the reclaim's delete is after it.
          this.#write(out, rid, {
            op: "persist",
            effect: { type: "persist-record", rid, name: g.name, address: g.address, owner: g.owner, keys, greetedAtMs: g.nowMs },
            then: (o) => {
              this.#records.set(rid, { address: g.address, owner: g.owner, keys, fromStart: true });
              open(o);
            },
            failed: (o, error) => o.push({ type: "refuse-greeting", greeting: g.greeting, error: "ESHUTDOWN", reason: `the store failed: ${error}` }),
          });
          return;
        }
        open(out);
        return;
      }
    }
  }

  /** A first greeting to this server (new client or first contact) whose record is durable: open its session. */
  #openFirst(out: ServerEffect[], g: GreetingInput, keys: ClientKeys, issued: boolean): void {
    const rid = g.rid;
    if (this.#fences.has(rid) || this.#reclaimed.has(rid)) {
      // Fenced while its greeting was being recorded: it must not come back, and its record must not either.
      if (this.#reclaimed.has(rid) && this.#records.has(rid)) {
        this.#records.delete(rid);
        this.#write(out, rid, {
          op: "delete",
          effect: { type: "delete-record", rid, purpose: "fenced-greeting" },
          then: () => undefined,
          failed: (o, error) => this.#fatal(o, `deleting the record of fenced client ${ridToHex(rid)} failed: ${error}`),
        });
      }
      out.push({ type: "refuse-greeting", greeting: g.greeting, error: "EFENCED", reason: "this client was fenced while it greeted" });
      return;
    }
    const existing = this.#sessions.get(rid);
    if (existing !== undefined) this.#dropSession(out, existing, "replaced by a first-contact greeting");
    this.#openSession(out, g, keys);
    this.#recovery.finish(rid, ["greeting"]);
    out.push({
      type: "accept-greeting",
      greeting: g.greeting,
      rid,
      how: "open",
      continuesPredecessor: false,
      issue: issued,
      requestLocks: this.#recovery.isPending(rid, "locks"),
    });
  }

  #openSession(out: ServerEffect[], g: GreetingInput, keys: ClientKeys): void {
    const session: Session = {
      rid: g.rid,
      name: g.name,
      address: g.address,
      owner: g.owner,
      conn: null,
      keys,
      leaving: g.farewell,
      farewellDone: false,
      farewellIds: [],
    };
    this.#sessions.set(g.rid, session);
    this.#attach(out, session, g);
  }

  #attach(out: ServerEffect[], session: Session, g: GreetingInput): void {
    this.#clearTimer(out, reconnectTimer(session.rid));
    session.conn = g.conn;
    session.address = g.address;
  }

  #dropSession(out: ServerEffect[], session: Session, reason: string): void {
    this.#clearTimer(out, reconnectTimer(session.rid));
    if (this.#sessions.get(session.rid) === session) this.#sessions.delete(session.rid);
    out.push({ type: "drop-session", rid: session.rid, reason });
  }

  #onDisconnected(out: ServerEffect[], rid: Rid, conn: number, reason: string): void {
    const session = this.#sessions.get(rid);
    if (session === undefined || session.conn !== conn) {
      // An older connection replaced by a reconnect, or a session already dropped.
      out.push({ type: "refused-input", input: "disconnected", reason: `connection ${conn} is not client ${ridToHex(rid)}'s` });
      return;
    }
    session.conn = null;
    if (session.farewellDone) {
      this.#sessions.delete(rid);
      out.push({ type: "forget-session", rid });
      return;
    }
    const ms = this.#options.reconnectTimeoutMs;
    out.push({ type: "log", level: "info", line: `client ${ridToHex(rid)} (${session.name}) disconnected: ${reason}; waiting ${ms} ms for it to reconnect`, rid });
    this.#setTimer(out, reconnectTimer(rid), ms);
  }

  // ------------------------------------------------------------------ farewell

  #onFarewell(out: ServerEffect[], rid: Rid, id: number): void {
    const session = this.#sessions.get(rid);
    if (session === undefined) {
      out.push({ type: "refused-input", input: "farewell", reason: `a farewell from client ${ridToHex(rid)}, which has no session` });
      return;
    }
    session.leaving = true;
    session.farewellIds.push(id);
    this.#runFarewell(out, session);
  }

  /** Answers queued farewells once the client's lock recovery finished (B5): entries, then record, then answer. */
  #runFarewell(out: ServerEffect[], session: Session): void {
    const rid = session.rid;
    if (this.#recovery.isPending(rid, "locks") || session.farewellIds.length === 0) return;
    const ids = session.farewellIds.splice(0);
    out.push({ type: "forget-locks", rid });
    this.#write(out, rid, {
      op: "delete",
      effect: { type: "delete-record", rid, purpose: "farewell" },
      then: (o) => {
        this.#records.delete(rid);
        if (this.#recovery.finish(rid, ["greeting", "locks"])) this.#recoveryFinished(o);
        session.farewellDone = true;
        // Answered on the session that asked (a session that replaced it meanwhile owes nothing).
        if (this.#sessions.get(rid) === session) o.push({ type: "answer-farewell", rid, ids });
      },
      failed: (o, error) => this.#fatal(o, `farewell of ${ridToHex(rid)} failed: ${error}`),
    });
  }

  // ------------------------------------------------------------------ recovery

  #finishRecovery(out: ServerEffect[], rid: Rid): void {
    if (this.#recovery.finish(rid, ["greeting", "locks"])) this.#recoveryFinished(out);
    const session = this.#sessions.get(rid);
    if (session !== undefined && session.farewellIds.length > 0) this.#runFarewell(out, session);
  }

  #recoveryFinished(out: ServerEffect[]): void {
    this.#clearTimer(out, "recovery");
    out.push({ type: "resume-locks" });
  }

  #onTimeout(out: ServerEffect[], timer: TimerId): void {
    if (!this.#timers.delete(timer)) {
      out.push({ type: "refused-input", input: "timeout", reason: `timer ${timer} is not armed` });
      return;
    }
    if (timer === "recovery") {
      for (const rid of this.#recovery.pendingRids()) {
        const record = this.#records.get(rid);
        const session = this.#sessions.get(rid);
        out.push({ type: "log", level: "warn", line: `client ${ridToHex(rid)} did not recover its locks in time; fencing it`, rid });
        this.#fence(out, rid, session?.address ?? record?.address ?? "unknown", session?.owner ?? record?.owner ?? null, "client_recovery");
      }
      return;
    }
    const rid = BigInt(timer.slice("reconnect:".length));
    const session = this.#sessions.get(rid);
    if (session === undefined || session.conn !== null) return;
    this.#fence(out, rid, session.address, session.owner, "client_reconnect");
  }

  // ------------------------------------------------------------------ fencing and reclaim

  #fence(out: ServerEffect[], rid: Rid, address: string, owner: ClientOwner | null, reason: FenceReason): void {
    const found = owner === null ? {} : { pid: owner.pid };
    if (!this.#fences.start({ rid, address, reason, ...found }, 0)) return; // B37: one fence per rid
    const session = this.#sessions.get(rid);
    if (session !== undefined) this.#dropSession(out, session, `fencing (${reason})`);
    out.push({ type: "fence", rid, address, owner, reason });
  }

  #onFenceOutcome(out: ServerEffect[], input: { type: "fence-done" | "fence-failed"; rid: Rid; error?: string }): void {
    const request = this.#fences.list().find((r) => r.rid === input.rid);
    if (request === undefined || request.state !== "running") {
      out.push({ type: "refused-input", input: input.type, reason: `no fence of client ${ridToHex(input.rid)} is running` });
      return;
    }
    if (input.type === "fence-failed") {
      this.#fences.onError(input.rid, input.error ?? "unknown error");
      this.#fatal(out, input.error ?? "unknown error");
      return;
    }
    this.#fences.onFenced(input.rid);
    this.#reclaimNext(out);
  }

  /** Reclaims fenced clients one at a time, oldest fence first; a fence that failed stops the server. */
  #reclaimNext(out: ServerEffect[]): void {
    if (this.#reclaiming !== null || this.#stopped) return;
    const request = this.#fences.next();
    if (request === undefined) return;
    if (request.state === "error") {
      this.#fatal(out, `fencing ${ridToHex(request.rid)} failed: ${request.error ?? "unknown error"}`);
      return;
    }
    this.#reclaim(out, request.rid, `fenced (${request.reason})`);
  }

  /**
   * Removes a fenced client: its record first, then its lock entries, with progress on every touched key;
   * then its fence is freed and its recovery finished. Deliberately not the reference order (§5.6:
   * entries, record last), which is safe only when every fence kills: here a fence agent may report
   * success for a process that lives on, and the record is what lets a later server accept the client
   * again. Were the entries given away first and this server died before the delete, the next one would
   * accept the fenced client and its recovery report, though others already held its locks (the
   * simulator's stress profile, with fences that do not kill, finds exactly that). With the record gone
   * first, such a client is refused EFENCED by every later server. The price: a slow delete keeps the
   * entries (and their keys) blocked until it lands, and a failing one stops this server (fatal) with the
   * entries never given away. A greeting of this client meanwhile is refused: the fence stays registered
   * until the reclaim finished, and `reclaimed` refuses it afterwards. (A farewell keeps the reference
   * order, entries then record: the client asked to leave, so nothing of it may come back.)
   */
  #reclaim(out: ServerEffect[], rid: Rid, why: string): void {
    this.#reclaiming = rid;
    out.push({ type: "log", level: "info", line: `reclaiming client ${ridToHex(rid)}: ${why}`, rid });
    const session = this.#sessions.get(rid);
    if (session !== undefined) this.#dropSession(out, session, why);
    this.#write(out, rid, {
      op: "delete",
      effect: { type: "delete-record", rid, purpose: "reclaim" },
      then: (o) => {
        this.#records.delete(rid);
        this.#reclaimed.add(rid);
        o.push({ type: "forget-locks", rid });
        this.#fences.free(rid);
        this.#reclaiming = null;
        this.#finishRecovery(o, rid);
        this.#reclaimNext(o);
      },
      failed: (o, error) => this.#fatal(o, `reclaiming ${ridToHex(rid)} failed: ${error}`),
    });
  }

  // ------------------------------------------------------------------ record writes (one at a time per rid)

  #write(out: ServerEffect[], rid: Rid, write: Omit<RecordWrite, "emitted">): void {
    const queue = this.#writes.get(rid);
    const entry: RecordWrite = { ...write, emitted: false };
    if (queue === undefined) {
      this.#writes.set(rid, [entry]);
      entry.emitted = true;
      out.push(entry.effect!);
      return;
    }
    queue.push(entry);
  }

  /** Runs `then` once every record write of rid decided so far has landed (at once when there is none). */
  #afterWrites(out: ServerEffect[], rid: Rid, then: (out: ServerEffect[]) => void): void {
    const queue = this.#writes.get(rid);
    if (queue === undefined) {
      then(out);
      return;
    }
    // A write-less step in the rid's order: it runs when the writes before it landed (or failed).
    queue.push({ op: "step", effect: null, then, failed: then, emitted: false });
  }

  #onRecordWritten(out: ServerEffect[], input: { type: "record-persisted" | "record-deleted" | "record-failed"; rid: Rid; error?: string }): void {
    const queue = this.#writes.get(input.rid);
    const head = queue?.[0];
    const expected = input.type === "record-persisted" ? "persist" : input.type === "record-deleted" ? "delete" : null;
    if (queue === undefined || head === undefined || !head.emitted || (expected !== null && head.op !== expected)) {
      out.push({ type: "refused-input", input: input.type, reason: `no ${expected ?? "record"} write of client ${ridToHex(input.rid)} is in flight` });
      return;
    }
    queue.shift();
    if (input.type === "record-failed") head.failed(out, input.error ?? "unknown error");
    else head.then(out);
    this.#pump(out, input.rid);
  }

  /** Emits the next write of rid, running the write-less steps before it. */
  #pump(out: ServerEffect[], rid: Rid): void {
    for (;;) {
      const queue = this.#writes.get(rid);
      if (queue === undefined) return;
      const next = queue[0];
      if (next === undefined) {
        this.#writes.delete(rid);
        return;
      }
      if (next.emitted) return;
      if (this.#stopped) return;
      if (next.effect === null) {
        queue.shift();
        next.then(out);
        continue;
      }
      next.emitted = true;
      out.push(next.effect);
      return;
    }
  }

  // ------------------------------------------------------------------ timers, fatal, stop

  #setTimer(out: ServerEffect[], timer: TimerId, ms: number): void {
    this.#timers.add(timer);
    out.push({ type: "set-timer", timer, ms });
  }

  #clearTimer(out: ServerEffect[], timer: TimerId): void {
    if (this.#timers.delete(timer)) out.push({ type: "clear-timer", timer });
  }

  #fatal(out: ServerEffect[], reason: string): void {
    out.push({ type: "fatal", reason });
    this.#stop(out);
  }

  #stop(out: ServerEffect[]): void {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const timer of this.#timers) out.push({ type: "clear-timer", timer });
    this.#timers.clear();
    this.#recovery.shutdown();
    this.#fences.stop(); // B38: no fence state outlives a server
    this.#sessions.clear();
    this.#writes.clear();
    this.#issuing.clear();
  }
}
