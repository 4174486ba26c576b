/**
 * The client's connection to the cluster: finds the leader among the given members, greets it, numbers
 * messages, and reconnects after a socket failure.
 *
 * Guarantees:
 * - Messages are handed to `onMessage` in arrival order, one connection at a time.
 * - After a socket failure it reconnects with a 100 ms back-off between failed attempts and none after a
 *   successful greeting (regression B30), greeting with the last server term it saw.
 * - A greeting refused with EAUTH fails `open()` with EAUTH; EFENCED reports `onFenced`.
 * Relies on: the server answering the greeting first on every connection.
 */
import { createHash, createHmac } from "node:crypto";
import { KeylockError } from "../core/errors.js";
import { ridToHex } from "../core/keys.js";
import { Command, PROTOCOL_VERSION, WireError, type Body, type Message } from "../protocol/messages.js";
import { FramedConnection, connectTcp, parseAddress } from "../io/tcp.js";

export const RECONNECT_DELAY_MS = 100;
export const TCP_CONNECT_TIMEOUT_MS = 1000;

export interface ClientConnectionOptions {
  servers: string[];
  rid: bigint;
  name: string;
  secret: string | undefined;
  onMessage(message: Message): void;
  onReconnect(info: { serverTerm: bigint; address: string }): void;
  onFenced(error: KeylockError): void;
  onError(error: Error): void;
}

interface Outgoing {
  cmd: Command;
  response: boolean;
  id: number;
  payload: Body;
}

export class ClientConnection {
  serverTerm = 0n;
  private clusterId = "";
  private connection: FramedConnection | null = null;
  private sendSeq = 0;
  private recvSeq = 0;
  private requestId = 0;
  /** Messages queued while no connection is up; sent after the next greeting. */
  private outbox: Outgoing[] = [];
  private destroyed = false;
  private farewellWaiter: { id: number; resolve: () => void } | null = null;
  private reconnecting = false;
  private preferred = 0;

  constructor(private readonly options: ClientConnectionOptions) {}

  /** Connects and greets; retries every member until `timeoutMs` passes. */
  async open(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let lastError: Error | undefined;
    for (;;) {
      try {
        await this.connectOnce(Math.max(1, Math.min(TCP_CONNECT_TIMEOUT_MS, deadline - Date.now())));
        return;
      } catch (error) {
        if (error instanceof KeylockError && error.code === "EAUTH") throw error;
        lastError = error as Error;
      }
      if (Date.now() + RECONNECT_DELAY_MS >= deadline) break;
      await sleep(RECONNECT_DELAY_MS);
    }
    throw new KeylockError(
      "ETIMEDOUT",
      `no keylock server answered within ${timeoutMs} ms (${this.options.servers.join(", ")}): ${lastError?.message ?? "no attempt"}`,
      { cause: lastError },
    );
  }

  /** Tries each member once, starting with the last one that worked. */
  private async connectOnce(timeoutMs: number): Promise<void> {
    const servers = this.options.servers;
    let lastError: Error = new Error("no servers");
    for (let i = 0; i < servers.length; i++) {
      const index = (this.preferred + i) % servers.length;
      try {
        await this.greet(servers[index]!, timeoutMs);
        this.preferred = index;
        return;
      } catch (error) {
        if (error instanceof KeylockError && (error.code === "EAUTH" || error.code === "EFENCED")) throw error;
        lastError = error as Error;
      }
    }
    throw lastError;
  }

  private async greet(server: string, timeoutMs: number): Promise<void> {
    const { host, port } = parseAddress(server);
    const socket = await connectTcp(host, port, timeoutMs);
    const connection = new FramedConnection(socket);
    const response = await new Promise<Message>((resolve, reject) => {
      const timer = setTimeout(() => {
        connection.close("greeting timed out");
        reject(new Error(`greeting to ${server} timed out`));
      }, timeoutMs);
      let answered = false;
      connection.start({
        onMessage: (message) => {
          if (!answered) {
            answered = true;
            clearTimeout(timer);
            resolve(message);
            return;
          }
          this.onMessage(connection, message);
        },
        onClose: (reason) => {
          clearTimeout(timer);
          if (!answered) reject(new Error(`connection to ${server} closed during greeting: ${reason}`));
          else this.onClose(connection, reason);
        },
      });
      connection.send({
        header: { seq: 1, ack: 0, id: 1, cmd: Command.GREETING, response: false, error: WireError.NONE },
        payload: {
          kind: "greeting-request",
          body: {
            clusterId: this.clusterId,
            protocolVersion: PROTOCOL_VERSION,
            rid: this.options.rid,
            lastServerTerm: this.serverTerm,
            farewell: this.farewellWaiter !== null,
            name: this.options.name,
            pid: process.pid,
            proof: this.options.secret === undefined ? new Uint8Array(0) : clientProof(this.options.secret, this.options.rid),
            admin: false,
          },
        },
      });
    });
    const { header, payload } = response;
    if (header.cmd !== Command.GREETING || !header.response) {
      connection.close("the server did not answer the greeting first");
      throw new KeylockError("EPROTO", `${server} did not answer the greeting first`);
    }
    if (header.error !== WireError.NONE || payload.kind !== "greeting-response") {
      const reason = payload.kind === "error" ? payload.body.message : `error ${header.error}`;
      connection.close(`greeting refused: ${reason}`);
      if (header.error === WireError.EAUTH) throw new KeylockError("EAUTH", `${server} refused the greeting: ${reason}`);
      if (header.error === WireError.EFENCED) throw new KeylockError("EFENCED", `${server} forgot this client: ${reason}`);
      throw new KeylockError("ECONNECT", `${server} refused the greeting: ${reason}`);
    }
    this.clusterId = payload.body.clusterId;
    const newServer = payload.body.serverTerm !== this.serverTerm;
    this.serverTerm = payload.body.serverTerm;
    this.connection = connection;
    this.sendSeq = 1;
    this.recvSeq = header.seq;
    const queued = this.outbox;
    this.outbox = [];
    for (const message of queued) this.transmit(message);
    if (newServer && this.requestId > 0) this.options.onReconnect({ serverTerm: this.serverTerm, address: server });
  }

  request(cmd: Command, payload: Body): number {
    const id = ++this.requestId;
    this.transmit({ cmd, response: false, id, payload });
    return id;
  }

  respond(cmd: Command, id: number, payload: Body): void {
    this.transmit({ cmd, response: true, id, payload });
  }

  private transmit(message: Outgoing): void {
    const connection = this.connection;
    if (!connection || connection.isClosed) {
      this.outbox.push(message);
      return;
    }
    connection.send({
      header: {
        seq: ++this.sendSeq,
        ack: this.recvSeq,
        id: message.id,
        cmd: message.cmd,
        response: message.response,
        error: WireError.NONE,
      },
      payload: message.payload,
    });
  }

  private onMessage(connection: FramedConnection, message: Message): void {
    if (connection !== this.connection) return;
    if (message.header.seq <= this.recvSeq) return; // duplicate
    this.recvSeq = message.header.seq;
    if (message.header.cmd === Command.FAREWELL && message.header.response) {
      const waiter = this.farewellWaiter;
      if (waiter && waiter.id === message.header.id) {
        this.farewellWaiter = null;
        waiter.resolve();
      }
      return;
    }
    this.options.onMessage(message);
  }

  private onClose(connection: FramedConnection, reason: string): void {
    if (connection !== this.connection) return;
    this.connection = null;
    if (this.destroyed) return;
    this.options.onError(new KeylockError("ECONNECT", `connection to the server lost: ${reason}; reconnecting`));
    void this.reconnectLoop();
  }

  private async reconnectLoop(): Promise<void> {
    if (this.reconnecting) return;
    this.reconnecting = true;
    try {
      while (!this.destroyed && this.connection === null) {
        try {
          await this.connectOnce(TCP_CONNECT_TIMEOUT_MS);
        } catch (error) {
          if (error instanceof KeylockError && error.code === "EFENCED") {
            this.options.onFenced(error);
            return;
          }
          await sleep(RECONNECT_DELAY_MS);
        }
      }
    } finally {
      this.reconnecting = false;
    }
  }

  /** Sends a farewell and waits for its answer. */
  farewell(): Promise<void> {
    return new Promise((resolve) => {
      const id = ++this.requestId;
      this.farewellWaiter = { id, resolve };
      this.transmit({ cmd: Command.FAREWELL, response: false, id, payload: { kind: "farewell", body: {} } });
    });
  }

  destroy(): void {
    this.destroyed = true;
    this.connection?.close("client closed");
    this.connection = null;
  }
}

/** The greeting proof: HMAC-SHA256 keyed by SHA-256(secret) over the rid (DESIGN §4). */
export function clientProof(secret: string, rid: bigint): Uint8Array {
  const digest = createHash("sha256").update(secret).digest();
  return createHmac("sha256", digest).update(`keylock-greeting:${ridToHex(rid)}`).digest();
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
