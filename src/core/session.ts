/**
 * Reliable messaging with one logical peer, across any number of sockets (reference §6.1–6.3, §6.5,
 * §6.11, §6.13): per-session seq and ack, request ids, the messages kept for resend, and the server's
 * greeting classification. Pure: the driver owns the sockets, frames what this returns, and feeds every
 * received header through `receive()` before acting on it.
 *
 * Generic over the protocol it carries (it imports nothing from protocol/): `C` is the command tag (compared
 * with ===), `E` the status code a response carries (requests carry `profile.noError`), `P` the payload,
 * never looked at. protocol/session.ts binds them to keylock's wire messages (`WireSession`).
 *
 * Guarantees:
 * - Every message this side queues gets the next seq of the session (from 1, never reused); a request
 *   also gets the next id (from 1), a response repeats its request's id.
 * - Kept until no longer needed: a request until its response arrives (or `forgetRequest`), a response
 *   until the peer acknowledges it (a received header with `ack >= seq`). Nothing else is kept.
 * - `attach()` returns every kept message in original seq order, re-stamped with the current ack, to be
 *   sent before anything new. With `receive()` dropping every seq at or below the last one received, this
 *   gives, between the same two sessions, exactly-once in-order delivery across reconnects: whatever the
 *   peer has not received is still kept here (what it has received is either answered or acknowledged),
 *   and whatever it already received is dropped as a duplicate when resent.
 * - `resetForNewServer()` (client side, a greeting answered by another term) gives at-least-once across
 *   servers: unanswered requests are resent to the new server; responses owed to the dead one are dropped,
 *   as are responses still to be written for requests it sent (`respond()` returns null for those).
 * - Lookups by id are O(1): Map operations (regression B33: linear scans collapsed with 40k messages in
 *   flight), and the peer's one owed request when there is only one is kept in fields (no Map churn per
 *   message on the usual one-at-a-time path); kept responses are a queue in seq order, so freeing acknowledged ones costs O(freed) and
 *   looks only at its head; `attach()` merges two lists already in seq order.
 * - Peer input never throws: duplicates and responses nobody waits for (already answered, forgotten, or
 *   of another command) are verdicts, not errors. Local misuse throws InvariantError: answering a
 *   request twice, or one never received, or with another command.
 * - Every peer-controlled header field is checked against what this side knows before anything changes
 *   (DESIGN §9); a violation is the verdict "protocol-error" (`problem` names it) and changes nothing:
 *   a seq or id that is not in 1..SEQ_MAX, an ack above the last seq this session assigned (except the
 *   bounded predecessor case below), a request whose id the peer already has outstanding here (an id
 *   reused before its answer). The driver closes that peer's connection. Checked in that order, after
 *   the duplicate test (a resent message with seq at or below the last received is a duplicate whatever
 *   its other fields). A peer can therefore never make `respond()` or `#takeSeq` throw: the ids we
 *   owe are distinct, and our seqs only advance by what we send (or by an adopted ack ≤
 *   SESSION_ADOPTED_ACK_MAX, leaving 2^52 seqs).
 * - Seq gaps are accepted: an honest peer's seqs jump after a failover (its counter continues while the
 *   new server's session starts at 0) and after acknowledged messages are freed. A peer that skips
 *   ahead only makes its own later, lower seqs duplicates; nothing of ours depends on contiguity.
 *
 * Relies on:
 * - The driver transmits what `request()`/`respond()` return at once and in call order, and what
 *   `attach()` returns before anything queued after it; one socket delivers in order.
 * - Greetings bypass the session on both sides (reference §6.3): each socket starts with a fresh greeting,
 *   never resent; `attach()` only after the greeting succeeded.
 * - The driver calls `attach()` only with the same peer session (server: a "reconnect" greeting; client:
 *   the same server term), and `resetForNewServer()` before `attach()` when the term changed.
 * - Responses to requests of a previous server: after `resetForNewServer()` the new server numbers its
 *   requests from 1 again, so a late answer to the dead server's request id 3 cannot be told from an
 *   answer to the new server's id 3. The driver must not answer requests received before the reset (tag
 *   them with its own epoch); as a safety net, an id owed only to the previous server is dropped.
 * - Bounds: the session keeps whatever is unanswered or unacknowledged. The driver checks
 *   `unansweredRequests + unackedResponses` against its limit (the server: `sessionUnackedMax`, beyond
 *   which it fences and reclaims the client).
 *
 * Across reconnect and failover (the cases of §6.11, as the drivers use them):
 * - Same client, same server ("reconnect"): the server re-attaches the session it kept, the client its
 *   own; each side resends what it keeps; duplicates are dropped by seq on arrival.
 * - Client to a new server ("first-contact"/"new-client"): a new server session; the client calls
 *   `resetForNewServer()` then `attach()`.
 * - A server session that starts after its predecessor answered the peer (a "farewell-retry": the server
 *   dropped its session after the farewell response, the client resends the farewell): the peer
 *   acknowledges seqs this session never sent. Such a session is created with
 *   `{ continuesPredecessor: true }`; until it sends its first message, `receive()` accepts an ack up to
 *   SESSION_ADOPTED_ACK_MAX and continues numbering after it, so the peer does not drop the new answer
 *   as a duplicate. Any other session (and this one once it sent something) treats an ack above its
 *   last seq as a protocol error.
 */
import { SlotMap } from "./slot-map.js";
import { InvariantError, invariant } from "./errors.js";
import { SEQ_MAX, SESSION_ADOPTED_ACK_MAX } from "./limits.js";

export type ReceiveVerdict = "deliver" | "duplicate" | "unmatched-response" | "protocol-error";

/** The header of every message a session hands out or receives (the peer's fields are untrusted). */
export interface SessionHeader<C, E> {
  /** Per-session send sequence, from 1; never 0. */
  readonly seq: number;
  /** The sender's last received seq (acknowledges the peer's messages up to it); 0 = none yet. */
  readonly ack: number;
  /** Request id (per-session counter from 1); a response repeats its request's. Never 0. */
  readonly id: number;
  readonly cmd: C;
  readonly response: boolean;
  /** A response's status; `noError` on every request. */
  readonly error: E;
}

export interface SessionMessage<C, E, P> {
  readonly header: SessionHeader<C, E>;
  readonly payload: P;
}

/** What a session needs to know of the protocol it carries. */
export interface SessionProfile<C, E> {
  /** The status of every request and of a plain response. */
  readonly noError: E;
  /** Commands that bypass the session (greetings, reference §6.3): queuing one is a local bug. */
  readonly unsequenced: readonly C[];
  /** A command's name in error texts. */
  readonly commandName: (cmd: C) => string;
}

/**
 * A message kept for resend: the message as first handed out (its header's ack is the one stamped then;
 * `attach()` re-stamps a copy with the current ack). Keeping the handed-out message itself, rather than
 * a separate record, saves an object per message on the hot path.
 */
type Kept<C, E, P> = SessionMessage<C, E, P>;

/**
 * Our responses waiting for the peer's ack, in seq order (assigned in order, freed from the front as
 * acks grow): a ring buffer. Freeing acknowledged responses looks at the head only: no iterator, no map,
 * and no allocation while the queue stays within its capacity (it doubles when full and goes back to a
 * small one when it empties after having grown large).
 */
class KeptQueue<T extends { readonly header: { readonly seq: number } }> {
  static readonly #INITIAL = 16;
  #items: (T | undefined)[] = new Array<T | undefined>(KeptQueue.#INITIAL).fill(undefined);
  #head = 0;
  #size = 0;

  get size(): number {
    return this.#size;
  }

  push(item: T): void {
    const capacity = this.#items.length;
    if (this.#size === capacity) {
      const items = this.toArray() as (T | undefined)[];
      items.length = capacity * 2;
      this.#items = items.fill(undefined, capacity);
      this.#head = 0;
    }
    this.#items[(this.#head + this.#size) & (this.#items.length - 1)] = item;
    this.#size++;
  }

  /** Drops every item with seq ≤ `seq` from the front. */
  freeThrough(seq: number): void {
    const items = this.#items;
    const mask = items.length - 1;
    let head = this.#head;
    let size = this.#size;
    while (size > 0 && items[head]!.header.seq <= seq) {
      items[head] = undefined;
      head = (head + 1) & mask;
      size--;
    }
    this.#head = head;
    this.#size = size;
    if (size === 0 && items.length > 1024) this.clear();
  }

  clear(): void {
    this.#items = new Array<T | undefined>(KeptQueue.#INITIAL).fill(undefined);
    this.#head = 0;
    this.#size = 0;
  }

  /** The items, oldest first (a copy). */
  toArray(): T[] {
    const items = this.#items;
    const mask = items.length - 1;
    const out = new Array<T>(this.#size);
    for (let i = 0; i < this.#size; i++) out[i] = items[(this.#head + i) & mask]!;
    return out;
  }
}

function isWireCounter(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 1 && value <= SEQ_MAX;
}

export class ReliableSession<C, E, P> {
  readonly #profile: SessionProfile<C, E>;
  #nextSeq = 1;
  /** Whether this session assigned a seq yet (an adopted predecessor ack only counts before that). */
  #sentAny = false;
  readonly #continuesPredecessor: boolean;
  #problem: string | null = null;
  #nextId = 1;
  #lastReceived = 0;
  #attached = false;
  /**
   * Our requests waiting for their response, by id; insertion order is seq order. A SlotMap: a client
   * usually has one outstanding, and a Map going 0 → 1 → 0 per request is shrunk by V8 every time.
   */
  readonly #requests = new SlotMap<number, Kept<C, E, P>>();
  /** Our responses waiting for the peer's ack, in seq order. */
  readonly #responses = new KeptQueue<Kept<C, E, P>>();
  /**
   * The peer's requests delivered and not yet answered: id → command. A SlotMap, as `#requests`: the usual
   * case is one at a time (a client awaits each grant), and it then touches no Map.
   */
  readonly #owed = new SlotMap<number, C>();
  /** Ids the previous server was owed when `resetForNewServer()` ran; answering one is dropped. */
  #owedToPreviousServer = new Set<number>();

  /**
   * `continuesPredecessor`: the server's "farewell-retry" session, which may number after the peer's ack
   * of a dropped predecessor (module contract). Every other session refuses such acks.
   */
  constructor(profile: SessionProfile<C, E>, options: { continuesPredecessor?: boolean } = {}) {
    this.#profile = profile;
    this.#continuesPredecessor = options.continuesPredecessor === true;
  }

  /**
   * Queue a request: assigns seq and id. It is kept until its response arrives. Returns the framed
   * message to transmit now, or null while detached (it goes out on `attach()`).
   */
  request(cmd: C, payload: P): { id: number; message: SessionMessage<C, E, P> | null } {
    // Plain ifs: an invariant() message closure would be allocated on every request.
    if (this.#profile.unsequenced.includes(cmd)) {
      throw new InvariantError(`${this.#profile.commandName(cmd)} bypasses the session; it is never queued or resent`);
    }
    if (this.#nextId > SEQ_MAX) throw new InvariantError("request ids exhausted");
    const id = this.#nextId++;
    const kept: Kept<C, E, P> = {
      header: { seq: this.#takeSeq(), ack: this.#lastReceived, id, cmd, response: false, error: this.#profile.noError },
      payload,
    };
    this.#requests.set(id, kept);
    return { id, message: this.#attached ? kept : null };
  }

  /**
   * Queue a response to the peer's request `id`: assigns seq; kept until the peer acknowledges it.
   * Returns the message to transmit now, or null while detached or when the request was the previous
   * server's (dropped: that server is gone).
   */
  respond(cmd: C, id: number, payload: P, error: E = this.#profile.noError): SessionMessage<C, E, P> | null {
    const commandName = this.#profile.commandName;
    const owedCmd = this.#owed.get(id);
    if (owedCmd === undefined) {
      if (this.#owedToPreviousServer.delete(id)) return null;
      throw new InvariantError(
        `response ${commandName(cmd)} id=${id}: no request with that id is waiting for an answer ` +
          `(answered twice, or never received)`,
      );
    }
    invariant(
      owedCmd === cmd,
      () => `response ${commandName(cmd)} id=${id} answers a ${commandName(owedCmd)} request`,
    );
    this.#owed.delete(id);
    const kept: Kept<C, E, P> = {
      header: { seq: this.#takeSeq(), ack: this.#lastReceived, id, cmd, response: true, error },
      payload,
    };
    this.#responses.push(kept);
    return this.#attached ? kept : null;
  }

  /**
   * Every received non-greeting header goes through here first. A seq at or below the last received is a
   * duplicate (drop it). Otherwise the header is checked (module contract: seq and id in range, ack not
   * above what we sent, a request id not already outstanding); a violation is "protocol-error" (see
   * `problem`) and changes nothing. A valid header's seq is recorded, our responses it acknowledges are
   * freed, and a response frees our request with that id and command ("deliver"), or finds none
   * (already answered, forgotten, or of another command: "unmatched-response", drop it silently).
   */
  receive(header: SessionHeader<C, E>): ReceiveVerdict {
    const { seq, ack, id } = header;
    if (!isWireCounter(seq)) return this.#refuse(`seq ${String(seq)} is not in 1..${SEQ_MAX}`);
    if (seq <= this.#lastReceived) return "duplicate";
    if (!isWireCounter(id)) return this.#refuse(`id ${String(id)} is not in 1..${SEQ_MAX}`);
    if (typeof ack !== "number" || !Number.isSafeInteger(ack) || ack < 0) {
      return this.#refuse(`ack ${String(ack)} is not a sequence number`);
    }
    const lastSent = this.#nextSeq - 1;
    const adopt = ack > lastSent && this.#continuesPredecessor && !this.#sentAny && ack <= SESSION_ADOPTED_ACK_MAX;
    if (ack > lastSent && !adopt) {
      return this.#refuse(`ack ${ack} acknowledges seqs never sent (the last one sent is ${lastSent})`);
    }
    if (!header.response && this.#owed.has(id)) {
      const owedName = this.#profile.commandName(this.#owed.get(id)!);
      return this.#refuse(`request id ${id} is reused while the ${owedName} request with that id is still unanswered`);
    }
    this.#lastReceived = seq;
    // A peer acknowledging seqs of this session's predecessor (contract above): number after them.
    if (adopt) this.#nextSeq = ack + 1;
    this.#freeAcknowledged(ack);
    if (!header.response) {
      this.#owed.set(id, header.cmd);
      return "deliver";
    }
    const request = this.#requests.get(id);
    if (request === undefined || request.header.cmd !== header.cmd) return "unmatched-response";
    this.#requests.delete(id);
    return "deliver";
  }

  /** Why the last "protocol-error" verdict was given (null before any). */
  get problem(): string | null {
    return this.#problem;
  }

  /** Whether the peer's request `id` is delivered here and not answered yet. */
  owes(id: number): boolean {
    return this.#owed.has(id);
  }

  /**
   * A socket to the same peer is up and greeted: every kept message (unanswered requests and
   * unacknowledged responses) in original seq order, re-stamped with the current ack, to transmit before
   * anything new. Marks the session attached.
   */
  attach(): SessionMessage<C, E, P>[] {
    this.#attached = true;
    const requests = this.#requests.values();
    const responses = this.#responses.toArray();
    const out: SessionMessage<C, E, P>[] = [];
    let r = 0;
    let s = 0;
    while (r < requests.length || s < responses.length) {
      const takeRequest =
        s >= responses.length || (r < requests.length && requests[r]!.header.seq < responses[s]!.header.seq);
      out.push(this.#frame(takeRequest ? requests[r++]! : responses[s++]!));
    }
    return out;
  }

  /** The socket is gone: new messages are kept for the next `attach()`. */
  detach(): void {
    this.#attached = false;
  }

  /**
   * Client side, after a greeting answered by a new server (another term): drop kept responses (they
   * were for the dead server) and forget what it was owed; reset the received seq to 0 (the new server
   * numbers from 1). Unanswered requests stay and go out on the next `attach()`: at-least-once across
   * servers. Our own seq and id counters continue.
   */
  resetForNewServer(): void {
    this.#responses.clear();
    this.#lastReceived = 0;
    this.#owedToPreviousServer = new Set(this.#owed.keys());
    this.#owed.clear();
  }

  /** Drop one outstanding request without an answer (e.g. farewell completion detected otherwise). */
  forgetRequest(id: number): void {
    this.#requests.delete(id);
  }

  get attached(): boolean {
    return this.#attached;
  }

  get unansweredRequests(): number {
    return this.#requests.size;
  }

  get unackedResponses(): number {
    return this.#responses.size;
  }

  /** The peer's requests delivered here and not answered yet. */
  get owedResponses(): number {
    return this.#owed.size;
  }

  get lastReceivedSeq(): number {
    return this.#lastReceived;
  }

  #takeSeq(): number {
    invariant(this.#nextSeq <= SEQ_MAX, "session seqs exhausted");
    this.#sentAny = true;
    return this.#nextSeq++;
  }

  #refuse(problem: string): "protocol-error" {
    this.#problem = problem;
    return "protocol-error";
  }

  /** Responses are kept in seq order and acks only grow, so this stops at the first one not yet acked. */
  #freeAcknowledged(ack: number): void {
    this.#responses.freeThrough(ack);
  }

  /** A kept message re-stamped with the current ack (for `attach()`). */
  #frame(kept: Kept<C, E, P>): SessionMessage<C, E, P> {
    const { seq, id, cmd, response, error } = kept.header;
    return { header: { seq, ack: this.#lastReceived, id, cmd, response, error }, payload: kept.payload };
  }
}

export type GreetingClass = "new-client" | "reconnect" | "forgotten" | "farewell-retry" | "first-contact";

/** How a greeting's lastServerTerm relates to this server's term. */
type TermRelation = "never-greeted" | "this-server" | "other-server";

/**
 * Reference §6.11 as a table, one row per (term relation, farewell flag, session found): what a greeting
 * means. Rows the reference marks "any" or "n/a" are spelled out.
 */
const GREETING_TABLE: Readonly<
  Record<
    TermRelation,
    Readonly<Record<"farewell" | "no-farewell", Readonly<Record<"session" | "no-session", GreetingClass>>>>
  >
> = {
  // The client never completed a greeting with any server: a brand-new client. A resent first greeting
  // (the answer was lost) finds a session and is new again (B21), not an error.
  "never-greeted": {
    "no-farewell": { session: "new-client", "no-session": "new-client" },
    farewell: { session: "new-client", "no-session": "new-client" },
  },
  // It greeted this very server before: resume the session if it is still here. Without one, the server
  // forgot it (it timed out and is being fenced) unless it is resending a farewell whose answer it lost
  // (the session was dropped after the farewell response).
  "this-server": {
    "no-farewell": { session: "reconnect", "no-session": "forgotten" },
    farewell: { session: "reconnect", "no-session": "farewell-retry" },
  },
  // It last greeted another server (normally an older term): failover, first contact with this server.
  "other-server": {
    "no-farewell": { session: "first-contact", "no-session": "first-contact" },
    farewell: { session: "first-contact", "no-session": "first-contact" },
  },
};

/**
 * Reference §6.11: greeting.lastServerTerm (0n = never greeted any server), its farewell flag, whether
 * this server still has a session for the rid, and this server's term. "first-contact" includes a
 * lastServerTerm above this server's term (a client that already met a newer leader); the driver decides
 * whether a stale leader should serve it.
 */
export function classifyGreeting(
  greeting: { lastServerTerm: bigint; farewell: boolean },
  server: { term: bigint; hasSession: boolean },
): GreetingClass {
  const relation: TermRelation =
    greeting.lastServerTerm === 0n
      ? "never-greeted"
      : greeting.lastServerTerm === server.term
        ? "this-server"
        : "other-server";
  return GREETING_TABLE[relation][greeting.farewell ? "farewell" : "no-farewell"][
    server.hasSession ? "session" : "no-session"
  ];
}
