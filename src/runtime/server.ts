/**
 * The lock server driver: a TCP listener whose sessions feed the pure LockServer (src/core/lock-server.ts)
 * and carry its effects back to clients.
 *
 * Guarantees:
 * - The lock table is only touched synchronously inside one message handler; sends are queued on the
 *   connection and written at the end of the tick (DESIGN §5: never await in the middle of a key).
 * - Persist before you promise: a client's mounted-client record is written before its greeting is
 *   answered; a farewell is answered only after the client's entries are gone and its record deleted;
 *   write seqs are reserved in the store before they are handed out (runtime/write-seq.ts).
 * - Bad input from one peer (malformed frame, protocol error, wrong cluster id or secret) closes that
 *   peer's connection with a logged reason; every other client carries on.
 * - A client whose connection drops keeps its locks for `reconnectTimeoutMs`; if it does not come back,
 *   its entries are reclaimed so other clients make progress.
 * - Failing to send to a disconnected client is not an error: its connection is gone and it will either
 *   reconnect or be reclaimed (regression B3).
 * Relies on: one server per store at a time (the member/election layer), the codec to validate fields.
 */
import net from "node:net";
import { createHmac, timingSafeEqual } from "node:crypto";
import { LockServer, type LockServerEffect } from "../core/lock-server.js";
import { ProtocolError } from "../core/errors.js";
import { keyToBytes, keyToHex, keyToText, ridToHex, type Key } from "../core/keys.js";
import type { Rid } from "../core/lock-messages.js";
import {
  Command,
  PROTOCOL_VERSION,
  WireError,
  type Body,
  type GreetingRequest,
  type Message,
} from "../protocol/messages.js";
import { FramedConnection, formatAddress } from "../io/tcp.js";
import type { Logger } from "../io/log.js";
import type { ClusterConfig, Store } from "../store/store.js";
import { ReservedWriteSeq } from "./write-seq.js";

export const RECONNECT_TIMEOUT_MS_DEFAULT = 20_000;
export const ADMIN_PAGE_ROWS_MAX = 1000;

export interface ServerOptions {
  store: Store;
  config: ClusterConfig;
  /** The slot this server runs in, and its election term (the server's identity, B22). */
  slot: number;
  term: bigint;
  host: string;
  port: number;
  reconnectTimeoutMs?: number;
  log: Logger;
  /** Extra status the member layer adds (members, roles). */
  describeMembers?: () => { slot: number; address: string; role: string }[];
}

/** Per-connection message numbering (DESIGN §3: per-connection seq/ack; requests carry ids). */
class Channel {
  private sendSeq = 0;
  private requestId = 0;
  recvSeq = 0;
  constructor(readonly connection: FramedConnection) {}

  request(cmd: Command, payload: Body): number {
    const id = ++this.requestId;
    this.write(cmd, false, id, WireError.NONE, payload);
    return id;
  }

  respond(cmd: Command, id: number, payload: Body, error: WireError = WireError.NONE): void {
    this.write(cmd, true, id, error, payload);
  }

  private write(cmd: Command, response: boolean, id: number, error: WireError, payload: Body): void {
    this.connection.send({
      header: { seq: ++this.sendSeq, ack: this.recvSeq, id, cmd, response, error },
      payload,
    });
  }
}

interface ClientSession {
  readonly rid: Rid;
  readonly name: string;
  readonly pid: number;
  address: string;
  channel: Channel | null;
  reconnectTimer: NodeJS.Timeout | null;
  farewellDone: boolean;
}

export class LockServerRuntime {
  readonly host: string;
  readonly port: number;
  private readonly locks: LockServer;
  private readonly sessions = new Map<Rid, ClientSession>();
  private readonly connections = new Set<FramedConnection>();
  private stopping = false;

  private constructor(
    private readonly options: ServerOptions,
    private readonly writeSeq: ReservedWriteSeq,
  ) {
    this.host = options.host;
    this.port = options.port;
    this.locks = new LockServer({ writeSeq });
  }

  /**
   * Prepares a server for `term`: reserves write seqs above everything ever issued. It accepts no
   * connection until the owner (member or embedded driver) hands sockets to `accept()`.
   */
  static async start(options: ServerOptions): Promise<LockServerRuntime> {
    const writeSeq = await ReservedWriteSeq.open(options.store);
    return new LockServerRuntime(options, writeSeq);
  }

  get address(): string {
    return formatAddress(this.host, this.port);
  }

  get term(): bigint {
    return this.options.term;
  }

  get isStopping(): boolean {
    return this.stopping;
  }

  /** Drops every connection and forgets all volatile state; clients keep theirs for the next server. */
  stop(): Promise<void> {
    if (this.stopping) return Promise.resolve();
    this.stopping = true;
    for (const session of this.sessions.values()) {
      if (session.reconnectTimer) clearTimeout(session.reconnectTimer);
    }
    for (const connection of this.connections) connection.destroy("server stopping");
    return Promise.resolve();
  }

  /** Serves one accepted socket (paused; the first message must be a greeting). */
  accept(socket: net.Socket): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    const connection = new FramedConnection(socket);
    this.connections.add(connection);
    const channel = new Channel(connection);
    let greeted: ClientSession | "admin" | "pending" | null = null;
    const backlog: Message[] = [];

    const dispatch = (message: Message): void => {
      if (message.header.seq <= channel.recvSeq) return; // duplicate: already processed
      channel.recvSeq = message.header.seq;
      if (greeted === "admin") this.onAdmin(channel, message);
      else if (greeted !== null && greeted !== "pending") this.onClientMessage(greeted, channel, message);
    };

    connection.start({
      onMessage: (message) => {
        if (greeted === null) {
          if (message.payload.kind !== "greeting-request") {
            this.refuse(channel, message, WireError.EPROTO, "the first message must be a greeting");
            return;
          }
          greeted = "pending";
          this.onGreeting(channel, message.header.id, message.payload.body).then(
            (session) => {
              greeted = session;
              if (session === null) return;
              for (const queued of backlog.splice(0)) dispatch(queued);
            },
            (error: Error) => {
              this.options.log(`greeting from ${connection.remoteAddress} failed: ${error.message}`);
              connection.close(`greeting failed: ${error.message}`);
            },
          );
          return;
        }
        if (message.payload.kind === "greeting-request") {
          this.refuse(channel, message, WireError.EPROTO, "a second greeting on one connection");
          return;
        }
        if (greeted === "pending") backlog.push(message);
        else dispatch(message);
      },
      onClose: (reason) => {
        this.connections.delete(connection);
        if (greeted !== null && greeted !== "pending" && greeted !== "admin") this.onDisconnect(greeted, channel, reason);
        else if (!this.stopping && !/peer closed/.test(reason)) {
          this.options.log(`connection from ${connection.remoteAddress} closed: ${reason}`);
        }
      },
    });
  }

  private refuse(channel: Channel, message: Message, error: WireError, reason: string): void {
    if (!message.header.response) channel.respond(message.header.cmd, message.header.id, errorBody(reason), error);
    this.options.log(`closing connection from ${channel.connection.remoteAddress}: ${reason}`);
    channel.connection.close(reason);
  }

  /** Validates a greeting; returns the client session, "admin", or null when the connection was refused. */
  private async onGreeting(
    channel: Channel,
    id: number,
    greeting: GreetingRequest,
  ): Promise<ClientSession | "admin" | null> {
    const connection = channel.connection;
    const problem = this.greetingProblem(greeting);
    if (problem) {
      channel.respond(Command.GREETING, id, errorBody(problem), WireError.EAUTH);
      this.options.log(`refused greeting from ${connection.remoteAddress}: ${problem}`);
      connection.close(problem);
      return null;
    }
    const respond = (): void =>
      channel.respond(Command.GREETING, id, {
        kind: "greeting-response",
        body: {
          clusterId: this.options.config.clusterId,
          protocolVersion: PROTOCOL_VERSION,
          serverTerm: this.options.term,
          rid: greeting.rid,
        },
      });
    if (greeting.admin) {
      respond();
      return "admin";
    }
    // Persist before promising: the record must exist before the client believes it is known (B21: an
    // existing record is success — a previous server may have written it and died before answering).
    await this.options.store.insertClient({
      rid: greeting.rid,
      name: greeting.name,
      address: connection.remoteAddress,
      pid: greeting.pid,
      hostname: greeting.name,
      greetedAtMs: Date.now(),
    });
    if (connection.isClosed) return null;
    let session = this.sessions.get(greeting.rid);
    if (session) {
      // Reconnect: the newer connection replaces the older one.
      if (session.reconnectTimer) clearTimeout(session.reconnectTimer);
      session.reconnectTimer = null;
      const previous = session.channel;
      session.channel = channel;
      session.address = connection.remoteAddress;
      previous?.connection.close("replaced by a newer connection from the same client");
    } else {
      session = {
        rid: greeting.rid,
        name: greeting.name,
        pid: greeting.pid,
        address: connection.remoteAddress,
        channel,
        reconnectTimer: null,
        farewellDone: false,
      };
      this.sessions.set(greeting.rid, session);
    }
    respond();
    return session;
  }

  private greetingProblem(greeting: GreetingRequest): string | undefined {
    const config = this.options.config;
    // An empty cluster id is a client's first greeting (it learns the id from our answer).
    if (greeting.clusterId !== "" && greeting.clusterId !== config.clusterId) {
      return `wrong cluster id "${greeting.clusterId}" (this is cluster "${config.clusterId}")`;
    }
    if (greeting.protocolVersion !== PROTOCOL_VERSION) {
      return `protocol version ${greeting.protocolVersion} is not supported (this server speaks ${PROTOCOL_VERSION})`;
    }
    if (config.secretDigest !== null) {
      const expected = greetingProof(config.secretDigest, greeting.rid);
      const given = greeting.proof;
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) return "wrong cluster secret";
    }
    return undefined;
  }

  private onClientMessage(session: ClientSession, channel: Channel, message: Message): void {
    const { header, payload } = message;
    switch (payload.kind) {
      case "lock": {
        const body = payload.body;
        if (header.response) {
          this.apply(this.locks.onInvalidateResponse(session.rid, body));
        } else {
          this.apply(
            this.locks.onRequest(session.rid, header.id, {
              key: body.key,
              oldMode: body.oldMode,
              newMode: body.newMode,
              noQueue: body.noQueue,
            }),
          );
        }
        return;
      }
      case "farewell":
        if (!header.response) this.onFarewell(session, channel, header.id);
        return;
      case "admin-request":
        this.onAdmin(channel, message);
        return;
      case "error":
        // An error response from a client to one of our requests: nothing we sent can fail, so it is a bug.
        this.refuse(channel, message, WireError.EPROTO, `client answered with an error: ${payload.body.message}`);
        return;
      default:
        this.refuse(channel, message, WireError.EPROTO, `unexpected ${payload.kind} message from a client`);
    }
  }

  private onFarewell(session: ClientSession, channel: Channel, id: number): void {
    this.apply(this.locks.onClientGone(session.rid));
    this.options.store.deleteClient(session.rid).then(
      () => {
        session.farewellDone = true;
        this.sessions.delete(session.rid);
        channel.respond(Command.FAREWELL, id, { kind: "farewell", body: {} });
        channel.connection.close("farewell answered");
      },
      (error: Error) => this.options.log(`farewell of ${ridToHex(session.rid)} failed: ${error.message}`),
    );
  }

  private onDisconnect(session: ClientSession, channel: Channel, reason: string): void {
    if (session.channel !== channel) return; // an older connection replaced by a reconnect
    session.channel = null;
    if (session.farewellDone || this.stopping) return;
    const waitMs = this.options.reconnectTimeoutMs ?? RECONNECT_TIMEOUT_MS_DEFAULT;
    this.options.log(`client ${ridToHex(session.rid)} (${session.name}) disconnected: ${reason}; waiting ${waitMs} ms for it to reconnect`);
    session.reconnectTimer = setTimeout(() => this.reclaim(session, "did not reconnect in time"), waitMs);
    session.reconnectTimer.unref();
  }

  /** Removes a client that is gone for good: its entries, with progress on every touched key, then its record. */
  private reclaim(session: ClientSession, why: string): void {
    if (this.sessions.get(session.rid) !== session || session.channel !== null) return;
    this.options.log(`reclaiming client ${ridToHex(session.rid)} (${session.name}): ${why}`);
    this.sessions.delete(session.rid);
    this.apply(this.locks.onClientGone(session.rid));
    this.options.store
      .deleteClient(session.rid)
      .catch((error: Error) => this.options.log(`deleting record of ${ridToHex(session.rid)} failed: ${error.message}`));
  }

  /** Sends the lock table's effects, in order. */
  private apply(effects: LockServerEffect[]): void {
    for (const effect of effects) {
      const channel = this.sessions.get(effect.rid)?.channel ?? null;
      switch (effect.type) {
        case "grant":
          channel?.respond(Command.LOCK, effect.requestId, {
            kind: "lock",
            body: { ...effect.grant, noQueue: false },
          });
          break;
        case "invalidate":
          channel?.request(Command.LOCK, {
            kind: "lock",
            body: { ...effect.invalidation, writeSeq: 0n, noQueue: false },
          });
          break;
        case "refuse":
          channel?.respond(Command.LOCK, effect.requestId, errorBody("the lock is busy"), WireError.EAGAIN);
          break;
        case "protocol-error":
          this.options.log(`protocol error from client ${ridToHex(effect.rid)}: ${effect.error.message}`);
          channel?.connection.close(effect.error.message);
          break;
      }
      // A missing channel is tolerated: the client is disconnected and will reconnect or be reclaimed (B3).
    }
  }

  private onAdmin(channel: Channel, message: Message): void {
    const { header, payload } = message;
    if (payload.kind !== "admin-request") {
      this.refuse(channel, message, WireError.EPROTO, `unexpected ${payload.kind} message on an admin connection`);
      return;
    }
    const page = payload.body;
    const limit = Math.min(Math.max(1, page.limit), ADMIN_PAGE_ROWS_MAX);
    const after = (key: Key): boolean => page.after === null || key > page.after;
    let body: unknown;
    switch (header.cmd) {
      case Command.ADMIN_STATUS:
        body = this.status();
        break;
      case Command.ADMIN_LOCKS:
        body = pageRows(
          this.locks.dump().filter((row) => after(row.key)),
          limit,
          (row) => ({ key: keyToBytes(row.key), mode: row.mode, state: row.state, rid: ridToHex(row.rid) }),
        );
        break;
      case Command.ADMIN_STATS:
        body = pageRows(
          this.locks.stats().filter((row) => after(row.key)),
          limit,
          (row) => ({
            key: keyToBytes(row.key),
            requests: row.requests,
            invalidations: row.invalidations,
            responses: row.responses,
            grants: row.grants,
          }),
        );
        break;
      default:
        this.refuse(channel, message, WireError.EPROTO, `command ${header.cmd} is not an admin query`);
        return;
    }
    channel.respond(header.cmd, header.id, { kind: "admin-response", body });
  }

  status(): Record<string, unknown> {
    const self = formatAddress(this.host, this.port);
    const members = this.options.describeMembers?.() ?? [{ slot: this.options.slot, address: self, role: "leader" }];
    return {
      term: this.options.term,
      leader: { slot: this.options.slot, address: self },
      members,
      clients: [...this.sessions.values()].map((s) => ({
        rid: ridToHex(s.rid),
        name: s.name,
        address: s.address,
        connected: s.channel !== null,
      })),
      recovering: this.locks.recovering,
    };
  }

  /** For tests and benchmarks: the lock table's size. */
  get lockTable(): { keys: number; entries: number } {
    return { keys: this.locks.keyCount, entries: this.locks.entryCount };
  }

  describeKey(key: Key): string {
    return `${keyToText(key)} (${keyToHex(key)})`;
  }
}

function errorBody(message: string): Body {
  return { kind: "error", body: { message } };
}

/** Admin pages: rows in key order after the cursor, at most `limit`, plus the cursor for the next page. */
function pageRows<T extends { key: Key }>(
  rows: T[],
  limit: number,
  shape: (row: T) => Record<string, unknown>,
): { rows: Record<string, unknown>[]; more: boolean } {
  // Several rows can share a key (one per client); a page never splits a key so "after key" resumes exactly.
  let end = Math.min(limit, rows.length);
  while (end < rows.length && end > 0 && rows[end]!.key === rows[end - 1]!.key) end++;
  return { rows: rows.slice(0, end).map(shape), more: end < rows.length };
}

/** The greeting proof a client with the right secret sends (see client/connection.ts clientProof). */
export function greetingProof(secretDigestHex: string, rid: Rid): Buffer {
  return createHmac("sha256", Buffer.from(secretDigestHex, "hex")).update(`keylock-greeting:${ridToHex(rid)}`).digest();
}

export { ProtocolError };
