/**
 * The client's connection to the cluster: finds the leader among the given members, greets it, and
 * keeps one reliable session (core/session.ts) across sockets and servers.
 *
 * Guarantees (reference §6.5, §6.13; issue "Surviving a server restart"):
 * - Messages are handed to `onMessage` in arrival order, each at most once per server (duplicates are
 *   dropped by seq), and only from the current socket.
 * - After a socket failure it reconnects at once (no back-off after a successful greeting, B30), then backs
 *   off between failed rounds of every member with full jitter (`reconnectDelayMs`: uniform in
 *   [0, min(500 ms, 50 ms × 2^attempt))), so clients of a failed leader do not retry in
 *   lockstep. The greeting deadline doubles with each greeting that timed out, from 1 s to 8 s
 *   (`greetingTimeoutMs`, back to 1 s once one succeeds), and it bounds each of the server's two answers
 *   (it starts again when the HELLO answer arrives), and it expires only after the input already due was
 *   read (as the election's timers, B41): a member too busy to greet within 1 s, or a client process
 *   descheduled past its deadline while the answer arrived, is still reached, not abandoned just before
 *   (or after) its answer every time (the TCP connect stays bounded by 1 s).
 *   It greets with the last server term it saw. To the same server, the session resumes:
 *   everything unanswered or unacknowledged is resent, exactly once. To a new server (another term): responses owed to the dead server are dropped, unanswered requests are resent
 *   (at-least-once across servers), and `epoch` increments so the owner can drop late answers to requests
 *   the dead server sent.
 * - A member that is not the leader answers ENOTLEADER, naming the leader when it knows it; the leader is
 *   tried next, and every member is tried in turn otherwise.
 * - With `tls`, every socket is TLS; a certificate either side refuses fails `open()` with EAUTH naming
 *   the cause (not retried: it will not change), and a member that closes or does not answer is retried
 *   as usual, the final ETIMEDOUT naming the likely cause (a TLS client at a plaintext member, or a
 *   plaintext client at a TLS endpoint; a keylock TLS member answers a plaintext greeting EAUTH itself).
 * - A greeting refused with EAUTH fails `open()`; EFENCED (the server forgot this client) reports
 *   `onFenced` and stops reconnecting. ERIDTAKEN (the rid is recorded for another client's claim) before
 *   this connection ever completed a greeting draws another rid (`onRidChanged`) and greets again: no
 *   session, record or lock was ours under the old one (known finding F2, docs/operations.md).
 * - Nothing a server sends throws here: a header the session refuses (an ack of seqs never sent, a
 *   request id reused while owed, out-of-range values) is reported as EPROTO through `onError`, and the
 *   socket is closed and re-established as after a reset (`protocolError`, also used by the owner for
 *   answers it cannot match). Answers to requests never made, or answered already, are dropped.
 * - Greeting v2 (client/handshake.ts): with a cluster secret, a member that cannot prove it holds the secret
 *   fails `open()` with EAUTH; the resumption secret the server issues is kept for every later greeting.
 * Relies on: the server answering HELLO and the greeting first on every socket.
 */
import { KeylockError, ProtocolError } from "../core/errors.js";
import { drawRid } from "../core/keys.js";
import { WireSession } from "../protocol/session.js";
import { Command, type Body, type Message } from "../protocol/messages.js";
import { newIdentity, type Identity } from "../io/greeting-proofs.js";
import { GreetingExchange, type GreetingRefusal, type GreetingResult } from "./handshake.js";
import { tlsAuthFailure, type ClientTlsOptions } from "../io/tcp.js";
import { openSocket, realWorld, setDeadline, type MessageConnection, type Timer, type World } from "../io/world.js";
export { openSocket };

/** Reconnect back-off: full jitter, uniform in [0, min(CAP, BASE × 2^attempt)) (the AWS architecture blog's "full jitter"). */
export const RECONNECT_DELAY_BASE_MS = 50;
export const RECONNECT_DELAY_CAP_MS = 500;

/** The pause before reconnect attempt `attempt` (0 = the first retry after a failed round of every member). */
export function reconnectDelayMs(attempt: number, random: () => number = Math.random): number {
  const ceiling = Math.min(RECONNECT_DELAY_CAP_MS, RECONNECT_DELAY_BASE_MS * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}
export const TCP_CONNECT_TIMEOUT_MS = 1000;
/**
 * `open()` starts no attempt with less time than this left: a connect and greeting squeezed into a
 * millisecond or two cannot succeed, and its "did not finish" would replace the last real failure in the
 * ETIMEDOUT message (a TLS client at a plaintext member then read as a timeout, not as the mismatch).
 */
export const ATTEMPT_MIN_MS = 20;
/**
 * The greeting's deadline (HELLO and GREETING answered, once the TCP connection is up) doubles with every
 * greeting that timed out since the last one that succeeded, from GREETING_TIMEOUT_MS_FIRST to
 * GREETING_TIMEOUT_MS_MAX, like TCP's retransmission timeout; refusals and failed connects do not grow
 * it, so a member that is down or not the leader is passed over as fast as before. A fixed deadline
 * shorter than a busy member's answer never succeeds: each attempt is abandoned just before its answer,
 * costs the member a greeting it completes anyway, and leaves a session there that fences this client
 * once its reconnect timeout passes with no greeting completed (seen with 100 client processes loading
 * one member: docs/performance.md). The cap stays under the server's own greeting deadline (10 s).
 */
export const GREETING_TIMEOUT_MS_FIRST = 1000;
export const GREETING_TIMEOUT_MS_MAX = 8000;

/** The greeting deadline after `timedOut` greetings in a row timed out (0 = the last one succeeded). */
export function greetingTimeoutMs(timedOut: number): number {
  return Math.min(GREETING_TIMEOUT_MS_MAX, GREETING_TIMEOUT_MS_FIRST * 2 ** Math.min(timedOut, 30));
}

export interface ClientConnectionOptions {
  servers: string[];
  rid: bigint;
  name: string;
  secret: string | undefined;
  /** TLS to every member (`true`: the system CAs); undefined: plaintext. */
  tls: ClientTlsOptions | undefined;
  onMessage(message: Message): void;
  onReconnect(info: { serverTerm: bigint; address: string; newServer: boolean }): void;
  onFenced(error: KeylockError): void;
  onError(error: Error): void;
  /** A round of reconnect attempts failed (for logs); the loop backs off and tries again. */
  onRetry?(error: Error, attempt: number): void;
  /**
   * `open()` drew another rid (now in `rid`): a server said the one it had is recorded for another client
   * (ERIDTAKEN) before this connection ever completed a greeting, so nothing was held under it.
   */
  onRidChanged?(rid: bigint): void;
  /** Clock, transport and randomness (io/world.ts); the real ones unless simulated. */
  world?: World;
  /**
   * The simulator's seam (client.ts ClientParts.wrapConnection), never set in production: called once at
   * construction with this connection's wire session and these options, so a mutation can wrap the session's
   * methods or replace `onMessage` (the connection reads both through the objects it is given, every time).
   */
  wrapParts?(session: WireSession, options: ClientConnectionOptions): void;
}

/** One client's connection to the cluster; its state is in #private fields (issue 10). */
export class ClientConnection {
  #serverTerm = 0n;
  #epoch = 0;
  #clusterId = "";
  /** Greeting v2: the resumption secret the server issued (null until then), and the claim seed that stands in for it. */
  #resume: Identity | null = null;
  readonly #claim = newIdentity();
  #connection: MessageConnection | null = null;
  readonly #session = new WireSession();
  #destroyed = false;
  #fenced = false;
  #farewellWaiter: { id: number; resolve: () => void } | null = null;
  #reconnecting = false;
  #preferred = 0;
  #leaderHint: string | null = null;
  /** Greetings that timed out since the last one that succeeded (the next deadline: greetingTimeoutMs). */
  #greetingTimeouts = 0;

  readonly #world: World;
  readonly #options: ClientConnectionOptions;

  constructor(options: ClientConnectionOptions) {
    this.#options = options;
    this.#world = options.world ?? realWorld;
    options.wrapParts?.(this.#session, options);
  }

  /** The term of the server last greeted (0n before any). */
  get serverTerm(): bigint {
    return this.#serverTerm;
  }

  /** Increments every time a greeting reaches a new server; tags requests received from a server. */
  get epoch(): number {
    return this.#epoch;
  }

  get connected(): boolean {
    return this.#connection !== null;
  }

  /** Connects and greets; retries every member until `timeoutMs` passes. */
  async open(timeoutMs: number): Promise<void> {
    const clock = this.#world.clock;
    const deadline = clock.now() + timeoutMs;
    let lastError: Error | undefined;
    for (let attempt = 0; ; attempt++) {
      try {
        const left = Math.max(1, deadline - clock.now());
        await this.#connectOnce(Math.min(TCP_CONNECT_TIMEOUT_MS, left), left);
        return;
      } catch (error) {
        lastError = error as Error;
        if ((error as GreetingRefusal).ridTaken === true && this.#serverTerm === 0n) {
          // Never greeted (no greeting answered yet: the server term is still 0): no session, record or lock
          // is ours under that rid (a claim of ours would have verified). Another rid, then greet again
          // after the usual pause (known finding F2).
          this.#options.rid = drawRid(() => draw64(this.#world.random));
          this.#options.onRidChanged?.(this.#options.rid);
        } else if (error instanceof KeylockError && (error.code === "EAUTH" || error.code === "EFENCED")) {
          throw error;
        }
      }
      const delayMs = reconnectDelayMs(attempt, this.#world.random);
      if (clock.now() + delayMs + ATTEMPT_MIN_MS >= deadline) break;
      await this.#sleep(delayMs);
    }
    throw new KeylockError(
      "ETIMEDOUT",
      `no keylock leader answered within ${timeoutMs} ms; last attempt: ${lastError?.message ?? "none"}`,
      { cause: lastError },
    );
  }

  /**
   * Tries each member once, starting with the last one that worked; a named leader is tried next.
   * `timeoutMs` bounds each greeting on top of its own deadline (open()'s time left).
   */
  async #connectOnce(connectTimeoutMs: number, timeoutMs = Infinity): Promise<void> {
    const servers = this.#options.servers;
    const queue: string[] = [];
    for (let i = 0; i < servers.length; i++) queue.push(servers[(this.#preferred + i) % servers.length]!);
    const tried = new Set<string>();
    const failures: string[] = [];
    while (queue.length > 0) {
      const server = queue.shift()!;
      if (tried.has(server)) continue;
      tried.add(server);
      try {
        await this.#greet(server, connectTimeoutMs, greetingTimeoutMs(this.#greetingTimeouts), timeoutMs);
        const index = servers.indexOf(server);
        if (index >= 0) this.#preferred = index;
        return;
      } catch (error) {
        if (error instanceof KeylockError && (error.code === "EAUTH" || error.code === "EFENCED")) throw error;
        failures.push(`${server}: ${(error as Error).message}`);
        const hint = this.#leaderHint;
        this.#leaderHint = null;
        if (hint !== null && !tried.has(hint)) queue.unshift(hint);
      }
    }
    throw new Error(failures.length > 0 ? failures.join("; ") : "no servers given");
  }

  /**
   * One greeting: `stageMs` bounds the wait for each of the server's two answers (HELLO, then GREETING: the
   * deadline starts again when the HELLO answer arrives, so a member that is alive but busy is waited for;
   * one that never answers is still left after `stageMs`), and `timeoutMs` bounds the whole greeting.
   */
  async #greet(server: string, connectTimeoutMs: number, stageMs: number, timeoutMs: number): Promise<void> {
    const clock = this.#world.clock;
    const startedAtMs = clock.monotonicMs();
    const connection = await this.#world.transport.connect(server, connectTimeoutMs, this.#options.tls);
    let socketError: NodeJS.ErrnoException | null = null;
    connection.socket?.on("error", (error) => (socketError ??= error));
    // Messages that arrive with the greeting answer (often in the same read) wait until it is processed.
    let early: Message[] | null = [];
    // Greeting v2 (client/handshake.ts): HELLO, then GREETING; the server's proof is checked before use.
    const exchange = new GreetingExchange(server, {
      rid: this.#options.rid,
      name: this.#options.name,
      pid: process.pid,
      lastServerTerm: this.#serverTerm,
      farewell: this.#farewellWaiter !== null,
      admin: false,
      secret: this.#options.secret,
      clusterId: this.#clusterId,
      resume: this.#resume,
      claim: this.#claim,
    });
    let result: GreetingResult;
    try {
      result = await new Promise<GreetingResult>((resolve, reject) => {
        let stage: "hello" | "greeting" | "done" = "hello";
        const fail = (error: unknown): void => {
          const failure = error instanceof Error ? error : new Error(String(error));
          stage = "done";
          clock.clearTimeout(timer);
          connection.close(`greeting failed: ${failure.message}`);
          reject(failure);
        };
        const wait = (): Timer => {
          const ms = Math.max(0, Math.round(Math.min(stageMs, timeoutMs - (clock.monotonicMs() - startedAtMs))));
          const armed = stage;
          const expire = (): void => {
            if (stage !== armed) return; // the answer was already in: read after the stall, before this check
            this.#greetingTimeouts++;
            fail(new Error(`the server at ${server} did not answer the ${stage === "hello" ? "HELLO" : "greeting"} within ${ms} ms${tlsHint(this.#options.tls)}`));
          };
          // Expiry is decided after the input already due (clock.defer: after the poll phase), as the
          // election's timers are (B41): a process descheduled past the deadline still reads an answer
          // that came in meanwhile, instead of its timer firing first and abandoning it.
          return setDeadline(clock, expire, ms);
        };
        let timer = wait();
        connection.start({
          onMessage: (message) => {
            if (stage === "hello") {
              try {
                connection.send(exchange.greeting(message));
                stage = "greeting";
                clock.clearTimeout(timer);
                timer = wait();
              } catch (error) {
                fail(error);
              }
              return;
            }
            if (stage === "greeting") {
              try {
                const finished = exchange.finish(message);
                stage = "done";
                this.#greetingTimeouts = 0;
                clock.clearTimeout(timer);
                resolve(finished);
              } catch (error) {
                fail(error);
              }
              return;
            }
            if (early) early.push(message);
            else this.#onMessage(connection, message);
          },
          onClose: (reason) => {
            if (stage !== "done") {
              stage = "done";
              clock.clearTimeout(timer);
              reject(greetingClosed(server, reason, socketError, this.#options.tls));
            } else this.#onClose(connection, reason);
          },
        });
        connection.send(exchange.hello());
      });
    } catch (error) {
      const leader = (error as GreetingRefusal).leader;
      if (leader !== undefined) this.#leaderHint = leader.address;
      throw error;
    }
    const payload = { body: result.response };
    if (result.resume !== null) this.#resume = result.resume;
    this.#clusterId = payload.body.clusterId;
    const newServer = payload.body.serverTerm !== this.#serverTerm;
    const first = this.#serverTerm === 0n;
    this.#serverTerm = payload.body.serverTerm;
    if (newServer) {
      this.#epoch++;
      this.#session.resetForNewServer();
    }
    this.#connection = connection;
    for (const message of this.#session.attach()) connection.send(message);
    if (!first) this.#options.onReconnect({ serverTerm: this.#serverTerm, address: server, newServer });
    const queued = early;
    early = null;
    for (const message of queued) this.#onMessage(connection, message);
  }

  request(cmd: Command, payload: Body): number {
    const { id, message } = this.#session.request(cmd, payload);
    if (message) this.#connection?.send(message);
    return id;
  }

  respond(cmd: Command, id: number, payload: Body): void {
    const message = this.#session.respond(cmd, id, payload);
    if (message) this.#connection?.send(message);
  }

  /**
   * The server broke the protocol (a refused header here, or an answer the owner cannot match): report
   * it as EPROTO through `onError`, close this socket, and reconnect as after a reset. Nothing throws.
   */
  protocolError(reason: string): void {
    const connection = this.#connection;
    if (connection === null) return;
    this.#options.onError(new ProtocolError(`the server at ${connection.remoteAddress} broke the protocol: ${reason}`));
    connection.close(`protocol error: ${reason}`);
  }

  #onMessage(connection: MessageConnection, message: Message): void {
    if (connection !== this.#connection) return;
    const verdict = this.#session.receive(message.header);
    if (verdict === "protocol-error") {
      this.protocolError(this.#session.problem ?? "bad header");
      return;
    }
    if (verdict !== "deliver") return;
    if (message.header.cmd === Command.FAREWELL && message.header.response) {
      const waiter = this.#farewellWaiter;
      if (waiter && waiter.id === message.header.id) {
        this.#farewellWaiter = null;
        waiter.resolve();
      }
      return;
    }
    this.#options.onMessage(message);
  }

  #onClose(connection: MessageConnection, reason: string): void {
    if (connection !== this.#connection) return;
    this.#connection = null;
    this.#session.detach();
    if (this.#destroyed) return;
    this.#options.onError(new KeylockError("ECONNECT", `connection to the server lost: ${reason}; reconnecting`));
    void this.#reconnectLoop();
  }

  async #reconnectLoop(): Promise<void> {
    if (this.#reconnecting) return;
    this.#reconnecting = true;
    try {
      // The first attempt goes at once (B30: no back-off after a connection that worked); failed rounds back off.
      for (let attempt = 0; !this.#destroyed && this.#connection === null; attempt++) {
        try {
          await this.#connectOnce(TCP_CONNECT_TIMEOUT_MS);
        } catch (error) {
          if (error instanceof KeylockError && error.code === "EFENCED") {
            this.#fenced = true;
            this.#destroyed = true;
            this.#farewellWaiter?.resolve(); // nothing left to say goodbye to
            this.#options.onFenced(error);
            return;
          }
          this.#options.onRetry?.(error as Error, attempt);
          await this.#sleep(reconnectDelayMs(attempt, this.#world.random));
        }
      }
    } finally {
      this.#reconnecting = false;
    }
  }

  get isFenced(): boolean {
    return this.#fenced;
  }

  /** Sends a farewell and waits for its answer (resent to a new server if this one dies first). */
  farewell(): Promise<void> {
    if (this.#destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      const { id, message } = this.#session.request(Command.FAREWELL, { kind: "farewell", body: {} });
      this.#farewellWaiter = { id, resolve };
      if (message) this.#connection?.send(message);
    });
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.#world.clock.setTimeout(resolve, ms));
  }

  destroy(): void {
    this.#destroyed = true;
    this.#connection?.close("client closed");
    this.#connection = null;
  }
}

/** Why a connection closed before the greeting was answered: EAUTH for a TLS alert about our certificate. */
export function greetingClosed(server: string, reason: string, socketError: NodeJS.ErrnoException | null, tls: ClientTlsOptions | undefined): Error {
  const auth = socketError === null ? null : tlsAuthFailure(socketError);
  if (auth !== null) return new KeylockError("EAUTH", `${server}: ${auth}`, { cause: socketError });
  return new Error(`connection to ${server} closed during greeting: ${reason}${tlsHint(tls)}`);
}

function tlsHint(tls: ClientTlsOptions | undefined): string {
  return tls === undefined
    ? " (is it a TLS member? then pass the tls option, or --tls-ca to the CLI)"
    : " (if the member closed it right after the TLS handshake, it may have refused this client's certificate)";
}

/** 64 bits from two draws of `random` (the world's: a simulated run replays them). */
function draw64(random: () => number): bigint {
  return (BigInt(Math.floor(random() * 0x1_0000_0000)) << 32n) | BigInt(Math.floor(random() * 0x1_0000_0000));
}
