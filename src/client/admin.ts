/**
 * Admin queries for the CLI (`keylock status | locks | stats`): one short connection that greets as an
 * admin (no mounted-client record, no locks) and pages through the answer.
 * Guarantees: tries each given member until one answers; a non-leader's ENOTLEADER answer names the
 * leader, which is tried next. Rejects with a KeylockError naming every member it tried, or at once with
 * EAUTH (a refused secret or TLS certificate, or a member that cannot prove it holds the cluster secret:
 * asking another member will not help).
 * Relies on: the server's admin paging ("rows after key K, at most N").
 */
import { randomBytes } from "node:crypto";
import { KeylockError } from "../core/errors.js";
import { keyFromBytes, type Key } from "../core/keys.js";
import { Command, WireError, type Message } from "../protocol/messages.js";
import { FramedConnection, type ClientTlsOptions } from "../io/tcp.js";
import { greetingClosed, openSocket } from "./connection.js";
import { GreetingExchange } from "./handshake.js";

export const ADMIN_TIMEOUT_MS = 5000;
const PAGE_ROWS = 1000;

export interface AdminOptions {
  servers: string[];
  secret?: string;
  /** TLS to the members (`--tls-ca F [--tls-cert F --tls-key F]`); undefined: plaintext. */
  tls?: ClientTlsOptions;
  timeoutMs?: number;
}

/** A request/response connection to one member, greeted as admin. */
export class AdminConnection {
  private seq = 1;
  private id = 1;
  private waiting = new Map<number, { resolve: (m: Message) => void; reject: (e: Error) => void }>();

  private constructor(private readonly connection: FramedConnection) {}

  static async open(server: string, options: AdminOptions): Promise<AdminConnection> {
    const timeoutMs = options.timeoutMs ?? ADMIN_TIMEOUT_MS;
    const socket = await openSocket(server, timeoutMs, options.tls);
    let socketError: NodeJS.ErrnoException | null = null;
    socket.on("error", (error) => (socketError ??= error));
    const admin = new AdminConnection(new FramedConnection(socket));
    admin.connection.start({
      onMessage: (message) => {
        const waiter = admin.waiting.get(message.header.id);
        admin.waiting.delete(message.header.id);
        waiter?.resolve(message);
      },
      onClose: (reason) => {
        const error = greetingClosed(server, reason, socketError, options.tls);
        for (const waiter of admin.waiting.values()) waiter.reject(error);
        admin.waiting.clear();
      },
    });
    // Greeting v2 (client/handshake.ts): an admin proves the cluster secret when one is set, and checks the
    // member's proof before trusting its answers. HELLO is request 1, GREETING request 2.
    const exchange = new GreetingExchange(server, {
      rid: (randomBytes(8).readBigUInt64BE() | 1n) & ~(1n << 63n), // never 0 nor 2^64-1
      name: "keylock-admin",
      pid: process.pid,
      lastServerTerm: 0n,
      farewell: false,
      admin: true,
      secret: options.secret,
      clusterId: "",
      resume: null,
      claim: null,
    });
    try {
      const helloAnswer = await admin.exchange(exchange.hello(), timeoutMs);
      exchange.finish(await admin.exchange(exchange.greeting(helloAnswer), timeoutMs));
    } catch (error) {
      admin.close();
      throw error;
    }
    admin.seq = 3;
    admin.id = 3;
    return admin;
  }

  call(cmd: Command, payload: Message["payload"], timeoutMs = ADMIN_TIMEOUT_MS): Promise<Message> {
    const id = this.id++;
    return this.exchange({ header: { seq: this.seq++, ack: 0, id, cmd, response: false, error: WireError.NONE }, payload }, timeoutMs);
  }

  /** Sends one request and waits for the answer with its id. */
  private exchange(message: Message, timeoutMs: number): Promise<Message> {
    const id = message.header.id;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new KeylockError("ETIMEDOUT", `no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, {
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.connection.send(message);
    });
  }

  /** Runs an admin query; for paged queries, follows pages until the last. */
  async query(cmd: Command): Promise<unknown> {
    if (cmd === Command.ADMIN_STATUS) return this.page(cmd, null);
    const rows: Record<string, unknown>[] = [];
    let after: Key | null = null;
    for (;;) {
      const page = (await this.page(cmd, after)) as { rows: Record<string, unknown>[]; more: boolean };
      rows.push(...page.rows);
      if (!page.more || page.rows.length === 0) return rows;
      after = keyFromBytes(page.rows[page.rows.length - 1]!.key as Uint8Array);
    }
  }

  private async page(cmd: Command, after: Key | null): Promise<unknown> {
    const answer = await this.call(cmd, { kind: "admin-request", body: { after, limit: PAGE_ROWS } });
    if (answer.payload.kind !== "admin-response") {
      const reason = answer.payload.kind === "error" ? answer.payload.body.message : answer.payload.kind;
      throw new KeylockError("EPROTO", `admin query failed: ${reason}`);
    }
    return answer.payload.body;
  }

  close(): void {
    this.connection.close("admin query done");
  }
}

/** Connects to the first member that answers as leader (following ENOTLEADER hints) and runs one query. */
export async function adminQuery(options: AdminOptions, cmd: Command): Promise<unknown> {
  const tried: string[] = [];
  const reasons: string[] = [];
  const queue = [...options.servers];
  while (queue.length > 0) {
    const server = queue.shift()!;
    if (tried.includes(server)) continue;
    tried.push(server);
    let admin: AdminConnection;
    try {
      admin = await AdminConnection.open(server, options);
    } catch (error) {
      const leader = (error as { leader?: { address: string } }).leader;
      if (leader && !tried.includes(leader.address)) queue.unshift(leader.address);
      if (error instanceof KeylockError && error.code === "EAUTH") throw error;
      reasons.push((error as Error).message);
      continue;
    }
    try {
      return await admin.query(cmd);
    } finally {
      admin.close();
    }
  }
  throw new KeylockError("ECONNECT", `no member answered: tried ${tried.join(", ")}${reasons.length > 0 ? ` (${reasons.join("; ")})` : ""}`);
}
