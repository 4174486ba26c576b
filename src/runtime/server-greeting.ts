/**
 * The greeting of a lock server connection (greeting v2, docs/protocol.md; io/greeting-proofs.ts), for the
 * lock server driver (runtime/server.ts): the greeting executor (`ServerGreetings`: proofs checked, the
 * owner looked up, the greeting handed to the server machine and its answer carried out) and the proofs
 * themselves: the cluster proof and version check, the identity check it hands to the server machine
 * (core/server-machine.ts `IdentityCheck`), and the answer with the server's proof.
 *
 * Guarantees:
 * - `greetingProblem` names why a greeting cannot be served on this cluster at all (wrong cluster id or
 *   version, a missing or wrong cluster proof), or undefined.
 * - `checkIdentity` verifies the identity proof under the keys the rid is known by (its resumption key, or
 *   else its claim key, as recorded); for a rid known nowhere, under the greeting's own claim key, and then,
 *   for a first greeting (lastServerTerm 0), makes fresh resumption keys the machine may record (`seed` is
 *   the secret answered to the client when it does).
 * - `ServerGreetings.onGreeting` refuses (EAUTH) a greeting whose proofs fail, an admin greeting
 *   `adminRefusal` refuses, and a client the fence agent says it could never fence (`cannotFence`: the
 *   local agent and no process found), before anything is recorded; a client is fenced as the process
 *   found behind its connection (io/peer-process.ts), never by the pid it greeted with. Every other client
 *   greeting goes to the machine as a `greeting` input, and its `done` is called exactly once: with the
 *   session when the machine accepts it (after its answer was sent), null when refused, stopped, or the
 *   peer left while its record was written (that session then must reconnect in time or be fenced).
 * - A greeting that fails on a bug (an exception: every expected failure is answered) is logged and
 *   closes that connection only; the server carries on.
 * - A resumed session's kept messages are resent right after the greeting's answer; a new one that must
 *   report its locks is asked for them right after.
 * Relies on: the transcript covering both nonces and every greeting field (io/greeting-proofs.ts); the
 * driver handing every `accept-greeting` / `refuse-greeting` effect to `accepted` / `refused`, and
 * calling `stop` when it stops.
 */
import {
  clientClusterProof,
  identityProofMatches,
  newIdentity,
  proofMatches,
  serverClusterProof,
  wrapResumeSecret,
  PUBLIC_KEY_BYTES,
  transcriptBytes,
} from "../io/greeting-proofs.js";
import type { ClientKeys, GreetingRefusal, IdentityCheck, ServerEffect, ServerInput, ServerMachine } from "../core/server-machine.js";
import { ridToHex } from "../core/keys.js";
import type { Rid } from "../core/lock-messages.js";
import { PROTOCOL_VERSION, WireError, type Body, type GreetingRequest, type Message } from "../protocol/messages.js";
import type { WireSession } from "../protocol/session.js";
import type { Clock, MessageConnection } from "../io/world.js";
import type { FenceAgent } from "../io/fence.js";
import type { Logger } from "../io/log.js";
import { findPeerProcess, type PeerProcess } from "../io/peer-process.js";
import type { ClusterConfig, MountedClientRecord, Store } from "../store/store.js";
import type { HelloState } from "./server-connection.js";
import { adminRefusal } from "./server-views.js";

export function greetingProblem(greeting: GreetingRequest, transcript: Buffer, clusterId: string, greetingKey: Buffer | null): string | undefined {
  // The client learned the cluster id from our HELLO answer; the transcript (and every proof) covers it.
  if (greeting.clusterId !== clusterId) {
    return `wrong cluster id "${greeting.clusterId}" (this is cluster "${clusterId}")`;
  }
  if (greeting.protocolVersion !== PROTOCOL_VERSION) {
    return `protocol version ${greeting.protocolVersion} is not supported (this server speaks ${PROTOCOL_VERSION})`;
  }
  if (greetingKey !== null && !proofMatches(greeting.proof, clientClusterProof(greetingKey, transcript))) {
    return greeting.proof.length === 0
      ? "this cluster has a secret and the greeting carries no proof: pass the cluster secret"
      : "wrong cluster secret (the greeting's proof does not verify on this connection)";
  }
  return undefined;
}

/** The identity check of a greeting under `known` keys (null: the rid is known nowhere). */
export function checkIdentity(known: ClientKeys | null, greeting: GreetingRequest, transcript: Buffer): { identity: IdentityCheck; seed: Buffer | null } {
  if (known !== null) {
    const ok = identityMatches(known, transcript, greeting.identityProof);
    const claimOk = !ok && identityProofMatches(greeting.claimKey, transcript, greeting.identityProof);
    return { identity: { kind: "known", keys: known, ok, claimOk }, seed: null };
  }
  const claimOk = identityProofMatches(greeting.claimKey, transcript, greeting.identityProof);
  if (!claimOk || greeting.lastServerTerm !== 0n) return { identity: { kind: "unknown", claimOk, fresh: null }, seed: null };
  const resume = newIdentity();
  const fresh = { resumeKey: resume.publicKey.toString("hex"), claimKey: Buffer.from(greeting.claimKey).toString("hex") };
  return { identity: { kind: "unknown", claimOk, fresh }, seed: resume.seed };
}

/** The greeting's answer: the server's proof over the transcript, and the wrapped resumption secret if one is issued. */
export function greetingAnswer(
  server: { clusterId: string; term: bigint; greetingKey: Buffer | null },
  greeting: GreetingRequest,
  transcript: Buffer,
  resumeSecret: Uint8Array | null,
): Body {
  const key = server.greetingKey;
  const wrapped = resumeSecret === null ? new Uint8Array(0) : wrapResumeSecret(key, transcript, resumeSecret);
  return {
    kind: "greeting-response",
    body: {
      clusterId: server.clusterId,
      protocolVersion: PROTOCOL_VERSION,
      serverTerm: server.term,
      rid: greeting.rid,
      proof: key === null ? new Uint8Array(0) : serverClusterProof(key, transcript, server.term, wrapped),
      resumeSecret: wrapped,
    },
  };
}

/** The keys a record holds, or null for no record. */
export function keysOf(record: MountedClientRecord | null | undefined): ClientKeys | null {
  return record == null ? null : { resumeKey: record.resumeKey, claimKey: record.claimKey };
}

/** Whether an identity proof verifies under a client's resumption key, or else its claim key. */
function identityMatches(keys: ClientKeys, transcript: Buffer, proof: Uint8Array): boolean {
  for (const hex of [keys.resumeKey, keys.claimKey]) {
    if (hex.length === PUBLIC_KEY_BYTES * 2 && identityProofMatches(Buffer.from(hex, "hex"), transcript, proof)) return true;
  }
  return false;
}

/** What the greeting executor uses of the server driver. */
export interface GreetingHost<S extends { readonly reliable: WireSession }> {
  readonly config: ClusterConfig;
  readonly greetingKey: Buffer | null;
  readonly term: bigint;
  readonly store: Store;
  readonly log: Logger;
  readonly clock: Clock;
  readonly fenceAgent: FenceAgent;
  readonly machine: ServerMachine;
  isStopping(): boolean;
  /** Hands an input to the server machine and carries out its effects. */
  input(input: ServerInput): void;
  /** Answers a request on a connection that has no session. */
  answer(connection: MessageConnection, header: Message["header"], error: WireError, payload: Body): void;
  /** The machine's number for a served connection. */
  connId(connection: MessageConnection): number;
  /** The session of `rid`, now attached to `connection` (the machine resumed it). */
  resume(rid: Rid, connection: MessageConnection, conn: number): S;
  /** A new session for `rid`, attached to `connection` (the machine began it). */
  begin(rid: Rid, connection: MessageConnection, conn: number, continuesPredecessor: boolean): S;
  /** The session's connection closed (as onClose would report it). */
  lost(session: S, connection: MessageConnection, reason: string): void;
  /** Asks the session for its locks (recovery, reference §5). */
  requestLocks(session: S): void;
}

/** A greeting handed to the machine, waiting for its answer (accept-greeting or refuse-greeting). */
interface PendingGreeting<S> {
  readonly connection: MessageConnection;
  readonly header: Message["header"];
  readonly greeting: GreetingRequest;
  readonly transcript: Buffer;
  /** The fresh resumption secret, answered when the machine issues the keys made from it. */
  readonly seed: Buffer | null;
  readonly done: (result: S | "admin" | null) => void;
}

const WIRE_ERRORS: Readonly<Record<GreetingRefusal, WireError>> = {
  EAUTH: WireError.EAUTH,
  EFENCED: WireError.EFENCED,
  ESHUTDOWN: WireError.ESHUTDOWN,
  ENOTLEADER: WireError.ENOTLEADER,
  ERIDTAKEN: WireError.ERIDTAKEN,
};

/** The greeting executor of one server: greetings from check to answer. */
export class ServerGreetings<S extends { readonly reliable: WireSession }> {
  private readonly pending = new Map<number, PendingGreeting<S>>();
  private seq = 0;

  constructor(private readonly host: GreetingHost<S>) {}

  /** A greeting came in on `connection` (the machine's `conn`): its session, "admin", or null when refused. */
  greet(connection: MessageConnection, conn: number, header: Message["header"], greeting: GreetingRequest, nonces: HelloState): Promise<S | "admin" | null> {
    return new Promise<S | "admin" | null>((done) => {
      this.onGreeting(connection, conn, header, greeting, nonces, done).catch((error: Error) => {
        // Only a bug gets here (every expected failure is answered): this greeting fails, not the server.
        this.host.log(`greeting from ${connection.remoteAddress} failed: ${error.message}`, { level: "warn" });
        connection.close(`greeting failed: ${error.message}`);
        done(null);
      });
    });
  }

  /**
   * Checks a greeting's proofs (reference §6.6, §6.11; greeting v2, docs/protocol.md) and hands it to the
   * machine, which classifies it: the cluster proof when the cluster has a secret; for a client, the
   * process behind its connection when the fence agent needs it, and the identity proof under the keys
   * the machine (or else the store) knows for its rid, so one client cannot act as another. `done` gets the
   * session, "admin", or null when refused (the machine's answer may come after record writes).
   */
  async onGreeting(
    connection: MessageConnection,
    conn: number,
    header: Message["header"],
    greeting: GreetingRequest,
    nonces: HelloState,
    done: (result: S | "admin" | null) => void,
  ): Promise<void> {
    const host = this.host;
    const refuse = (error: WireError, reason: string): void => {
      this.refuse(connection, header, greeting, error, reason);
      done(null);
    };
    const transcript = transcriptBytes({ ...greeting, ...nonces });
    const problem = greetingProblem(greeting, transcript, host.config.clusterId, host.greetingKey);
    if (problem) return refuse(WireError.EAUTH, problem);
    if (host.isStopping()) return refuse(WireError.ESHUTDOWN, "the server is stopping");
    if (greeting.admin) {
      const why = adminRefusal({
        address: connection.remoteAddress,
        hasSecret: host.config.secretDigest !== null,
        tlsClientVerified: (connection.socket as { authorized?: boolean } | undefined)?.authorized === true,
      });
      if (why !== undefined) return refuse(WireError.EAUTH, why);
      this.answer(connection, header, greeting, transcript, null);
      done("admin");
      return;
    }
    const rid = greeting.rid;
    let owner: PeerProcess | null = null;
    if (host.machine.needsOwner(greeting)) {
      // A session begins: find the process behind the connection ourselves (DESIGN §9 "Fencing"); the
      // greeting's pid is the peer's word and is never used to fence. A client the agent could never fence
      // is refused now: recorded, it would stop every server in turn once it vanished.
      const recorded = host.machine.recordedOwner(rid)?.pid;
      const lookup = connection.socket
        ? await findPeerProcess(connection.socket, { hints: recorded ? [recorded] : [] })
        : { process: null, reason: "not a socket of this host" };
      owner = lookup.process;
      const unfenceable = host.fenceAgent.cannotFence?.(owner, lookup.reason);
      if (unfenceable !== undefined) return refuse(WireError.EAUTH, unfenceable);
      if (host.isStopping()) return refuse(WireError.ESHUTDOWN, "the server is stopping");
    }
    // Identity (DESIGN §9): checked under the keys the machine knows (a session, a record, a first record
    // being written: B21), else those of the store's record, read again after any wait.
    let known = host.machine.keysOf(rid);
    if (known === null) {
      let stored: MountedClientRecord | null;
      try {
        stored = await host.store.getClient(rid);
      } catch (error) {
        return refuse(WireError.ESHUTDOWN, `the store failed: ${(error as Error).message}`);
      }
      if (host.isStopping()) return done(null);
      known = host.machine.keysOf(rid) ?? keysOf(stored);
    }
    const { identity, seed } = checkIdentity(known, greeting, transcript);
    const id = ++this.seq;
    this.pending.set(id, { connection, header, greeting, transcript, seed, done });
    host.input({
      type: "greeting",
      greeting: id,
      conn,
      rid,
      name: greeting.name,
      address: connection.remoteAddress,
      farewell: greeting.farewell,
      lastServerTerm: greeting.lastServerTerm,
      owner: owner === null ? null : { pid: owner.pid, start: owner.start },
      identity,
      nowMs: host.clock.now(),
    });
  }

  /** The machine refused a greeting (`refuse-greeting`). */
  refused(effect: Extract<ServerEffect, { type: "refuse-greeting" }>): void {
    const pending = this.pending.get(effect.greeting);
    if (pending === undefined) return;
    this.pending.delete(effect.greeting);
    this.refuse(pending.connection, pending.header, pending.greeting, WIRE_ERRORS[effect.error], effect.reason);
    pending.done(null);
  }

  /** The machine accepted a greeting (`accept-greeting`): resume the client's session on it, or begin a new one. */
  accepted(effect: Extract<ServerEffect, { type: "accept-greeting" }>): void {
    const pending = this.pending.get(effect.greeting);
    if (pending === undefined) return;
    this.pending.delete(effect.greeting);
    const { connection, header, greeting, transcript } = pending;
    const conn = this.host.connId(connection);
    if (effect.how === "resume") {
      const session = this.host.resume(effect.rid, connection, conn);
      this.answer(connection, header, greeting, transcript, null);
      for (const message of session.reliable.attach()) connection.send(message);
      pending.done(session);
      return;
    }
    const session = this.host.begin(effect.rid, connection, conn, effect.continuesPredecessor);
    if (!effect.continuesPredecessor && connection.isClosed) {
      // Gone before we could answer: it has a record now, so it must reconnect in time or be fenced.
      this.host.lost(session, connection, "closed during its greeting");
      pending.done(null);
      return;
    }
    this.answer(connection, header, greeting, transcript, effect.issue ? pending.seed : null);
    session.reliable.attach();
    if (effect.requestLocks) this.host.requestLocks(session);
    pending.done(session);
  }

  /** The server stops: every greeting still waiting for the machine ends unanswered. */
  stop(): void {
    for (const pending of this.pending.values()) pending.done(null);
    this.pending.clear();
  }

  private refuse(connection: MessageConnection, header: Message["header"], greeting: GreetingRequest, error: WireError, reason: string): void {
    this.host.answer(connection, header, error, errorBody(reason));
    this.host.log(`refused greeting from ${connection.remoteAddress} (${ridToHex(greeting.rid)}): ${reason}`, { level: "warn", rid: ridToHex(greeting.rid) });
    connection.close(reason);
  }

  private answer(connection: MessageConnection, header: Message["header"], greeting: GreetingRequest, transcript: Buffer, resumeSecret: Uint8Array | null): void {
    const { config, term, greetingKey } = this.host;
    this.host.answer(connection, header, WireError.NONE, greetingAnswer({ clusterId: config.clusterId, term, greetingKey }, greeting, transcript, resumeSecret));
  }
}

/** An error answer's body. */
export function errorBody(message: string): Body {
  return { kind: "error", body: { message } };
}
