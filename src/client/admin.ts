/**
 * The admin client (`connectAdmin`, exported) and the CLI's one-shot queries (`keylock status | locks |
 * stats | fences`): a connection that greets as an admin (no mounted-client record, no locks) and pages
 * through typed answers. Every answer is read through the admin schema (protocol/admin.ts), which the
 * server's answers are typed by too.
 * Guarantees: tries each given member until one answers; a non-leader's ENOTLEADER answer names the
 * leader, which is tried next. Rejects with a KeylockError naming every member it tried, or at once with
 * EAUTH (a refused secret or TLS certificate, or a member that cannot prove it holds the cluster secret:
 * asking another member will not help). An answer that does not
 * fit the schema rejects with EPROTO. An `AdminClient` keeps its connection to the leader and finds the
 * leader again when that connection closes (the next query reconnects).
 * Relies on: the server's admin paging ("rows after key K, at most N").
 */
import { randomBytes } from "node:crypto";
import { KeylockError, ProtocolError } from "../core/errors.js";
import { drawRid, keyFromBytes, type Key } from "../core/keys.js";
import { ADMIN_PAGE_ROWS_MAX } from "../core/limits.js";
import { Command, WireError, type Body, type Message } from "../protocol/messages.js";
import {
  ADMIN_QUERIES,
  adminQueryOf,
  type AdminAnswer,
  type AdminLockRow,
  type AdminPage,
  type AdminQueryName,
  type AdminStatsRow,
  type AdminStatus,
} from "../protocol/admin.js";
import { FramedConnection, type ClientTlsOptions } from "../io/tcp.js";
import { greetingClosed, openSocket } from "./connection.js";
import { GreetingExchange, type GreetingRefusal } from "./handshake.js";

export const ADMIN_TIMEOUT_MS = 5000;

export interface AdminOptions {
  /** Any members, any order (as for connect()). */
  servers: string[];
  /** The cluster secret when the cluster has one. */
  secret?: string;
  /** TLS to the members: `true` trusts the system CAs; an object takes node:tls options (as for connect()). */
  tls?: true | ClientTlsOptions;
  /** How long one member may take to answer a greeting or a query (default 5000). */
  timeoutMs?: number;
}

interface Waiter {
  resolve: (message: Message) => void;
  reject: (error: Error) => void;
}

function tlsOf(options: AdminOptions): ClientTlsOptions | undefined {
  return options.tls === undefined ? undefined : options.tls === true ? {} : options.tls;
}

/** A request/response connection to one member, greeted as admin. */
export class AdminConnection {
  readonly #connection: FramedConnection;
  readonly #waiting = new Map<number, Waiter>();
  readonly #timeoutMs: number;
  #seq = 1;
  #id = 1;
  #closed = false;

  private constructor(connection: FramedConnection, timeoutMs: number) {
    this.#connection = connection;
    this.#timeoutMs = timeoutMs;
  }

  static async open(server: string, options: AdminOptions): Promise<AdminConnection> {
    const timeoutMs = options.timeoutMs ?? ADMIN_TIMEOUT_MS;
    const tls = tlsOf(options);
    const socket = await openSocket(server, timeoutMs, tls);
    let socketError: NodeJS.ErrnoException | null = null;
    socket.on("error", (error) => (socketError ??= error));
    const admin = new AdminConnection(new FramedConnection(socket), timeoutMs);
    admin.#connection.start({
      onMessage: (message) => {
        const waiter = admin.#waiting.get(message.header.id);
        admin.#waiting.delete(message.header.id);
        waiter?.resolve(message);
      },
      onClose: (reason) => {
        admin.#closed = true;
        const error = greetingClosed(server, reason, socketError, tls);
        for (const waiter of admin.#waiting.values()) waiter.reject(error);
        admin.#waiting.clear();
      },
    });
    // Greeting v2 (client/handshake.ts): an admin proves the cluster secret when one is set, and checks the
    // member's proof before trusting its answers. HELLO is request 1, GREETING request 2.
    const exchange = new GreetingExchange(server, {
      rid: drawRid(() => randomBytes(8).readBigUInt64BE()),
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
      const helloAnswer = await admin.#exchange(exchange.hello());
      exchange.finish(await admin.#exchange(exchange.greeting(helloAnswer)));
    } catch (error) {
      admin.close();
      throw error;
    }
    admin.#seq = 3;
    admin.#id = 3;
    return admin;
  }

  /** Whether the connection is gone (closed by either side). */
  get closed(): boolean {
    return this.#closed;
  }

  /** Runs one admin query; a paged one follows pages until the last. */
  async query<Q extends AdminQueryName>(name: Q): Promise<AdminAnswer<Q>> {
    const query = ADMIN_QUERIES[name];
    if (!query.paged) return (await this.#page(name, null)) as AdminAnswer<Q>;
    const rows: (AdminLockRow | AdminStatsRow)[] = [];
    let after: Key | null = null;
    for (;;) {
      const page = (await this.#page(name, after)) as AdminPage<AdminLockRow | AdminStatsRow>;
      rows.push(...page.rows);
      if (!page.more || page.rows.length === 0) return rows as AdminAnswer<Q>;
      after = keyFromBytes(page.rows[page.rows.length - 1]!.key);
    }
  }

  close(): void {
    this.#closed = true;
    this.#connection.close("admin query done");
  }

  async #page(name: AdminQueryName, after: Key | null): Promise<unknown> {
    const query = ADMIN_QUERIES[name];
    const answer = await this.#call(query.cmd, { kind: "admin-request", body: { after, limit: ADMIN_PAGE_ROWS_MAX } });
    if (answer.payload.kind !== "admin-response") {
      const reason = answer.payload.kind === "error" ? answer.payload.body.message : answer.payload.kind;
      throw new KeylockError("EPROTO", `admin query ${name} failed: ${reason}`);
    }
    try {
      return query.answer.read(answer.payload.body, name);
    } catch (error) {
      if (error instanceof ProtocolError) throw new KeylockError("EPROTO", error.message, { cause: error });
      throw error;
    }
  }

  #call(cmd: Command, payload: Body): Promise<Message> {
    const id = this.#id++;
    return this.#exchange({ header: { seq: this.#seq++, ack: 0, id, cmd, response: false, error: WireError.NONE }, payload });
  }

  /** Sends one request and waits for the answer with its id. */
  #exchange(message: Message): Promise<Message> {
    const id = message.header.id;
    const timeoutMs = this.#timeoutMs;
    return new Promise((resolve, reject) => {
      if (this.#closed) {
        reject(new KeylockError("ECONNECT", "the admin connection is closed"));
        return;
      }
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        reject(new KeylockError("ETIMEDOUT", `no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiting.set(id, {
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.#connection.send(message);
    });
  }
}

/** Opens an admin connection to the first member that answers as leader, following ENOTLEADER hints. */
async function openLeader(options: AdminOptions): Promise<AdminConnection> {
  const tried: string[] = [];
  const reasons: string[] = [];
  const queue = [...options.servers];
  while (queue.length > 0) {
    const server = queue.shift()!;
    if (tried.includes(server)) continue;
    tried.push(server);
    try {
      return await AdminConnection.open(server, options);
    } catch (error) {
      const leader = (error as GreetingRefusal).leader;
      if (leader !== undefined && !tried.includes(leader.address)) queue.unshift(leader.address);
      if (error instanceof KeylockError && error.code === "EAUTH") throw error;
      reasons.push((error as Error).message);
    }
  }
  throw new KeylockError("ECONNECT", `no member answered: tried ${tried.join(", ")}${reasons.length > 0 ? ` (${reasons.join("; ")})` : ""}`);
}

/**
 * Admin queries against a cluster (what `keylock status | locks | stats | fences` print), typed by the
 * admin schema. Keeps one connection to the leader; after it closes (the leader stopped, or failed over)
 * the next query finds the leader again.
 */
export class AdminClient {
  readonly #options: AdminOptions;
  #connection: AdminConnection | null;

  private constructor(options: AdminOptions, connection: AdminConnection) {
    this.#options = { ...options, servers: [...options.servers] };
    this.#connection = connection;
  }

  /** Use `connectAdmin()`. */
  static async connect(options: AdminOptions): Promise<AdminClient> {
    return new AdminClient(options, await openLeader(options));
  }

  /** The leader, members, clients (at most STATUS_CLIENTS_MAX), recovery state and fence requests. */
  status(): Promise<AdminStatus> {
    return this.query("status");
  }

  /** Every lock entry (granted, requested or invalidated), in key order. */
  locks(): Promise<AdminLockRow[]> {
    return this.query("locks");
  }

  /** Per-key message counters, in key order. */
  stats(): Promise<AdminStatsRow[]> {
    return this.query("stats");
  }

  async query<Q extends AdminQueryName>(name: Q): Promise<AdminAnswer<Q>> {
    if (this.#connection === null || this.#connection.closed) this.#connection = await openLeader(this.#options);
    return this.#connection.query(name);
  }

  close(): void {
    this.#connection?.close();
    this.#connection = null;
  }
}

/** Connects to the cluster's leader for admin queries (see AdminClient). */
export function connectAdmin(options: AdminOptions): Promise<AdminClient> {
  return AdminClient.connect(options);
}

/** Connects to the leader, runs one query and closes (the CLI's admin commands). */
export async function adminQuery<Q extends AdminQueryName>(options: AdminOptions, query: Q): Promise<AdminAnswer<Q>>;
export async function adminQuery(options: AdminOptions, cmd: typeof Command.ADMIN_STATUS): Promise<AdminStatus>;
export async function adminQuery(options: AdminOptions, cmd: typeof Command.ADMIN_LOCKS): Promise<AdminLockRow[]>;
export async function adminQuery(options: AdminOptions, cmd: typeof Command.ADMIN_STATS): Promise<AdminStatsRow[]>;
export async function adminQuery(options: AdminOptions, cmd: Command): Promise<AdminStatus | AdminLockRow[] | AdminStatsRow[]>;
export async function adminQuery(
  options: AdminOptions,
  which: AdminQueryName | Command,
): Promise<AdminStatus | AdminLockRow[] | AdminStatsRow[]> {
  const name = typeof which === "string" ? which : adminQueryOf(which);
  if (name === undefined) throw new KeylockError("EINVAL", `command ${which} is not an admin query`);
  const connection = await openLeader(options);
  try {
    return await connection.query(name);
  } finally {
    connection.close();
  }
}
