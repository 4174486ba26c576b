/**
 * One connection to the lock server, from accept to its first session message (greeting v2,
 * docs/protocol.md): HELLO with the client's nonce, answered with the server's; then GREETING, handed to
 * the server (`greet`), which answers it; then the session's messages, or admin queries. For
 * runtime/server.ts.
 *
 * Guarantees:
 * - The first message must be HELLO (else EPROTO) of this protocol version (else EAUTH); the second a
 *   greeting (else EPROTO); a second HELLO or greeting on one connection is EPROTO. Each refusal answers
 *   the request and closes this connection only.
 * - Messages that arrive while the greeting is being decided are kept and delivered, in order, once it
 *   was accepted (after its answer was sent); a refused greeting drops them with the connection.
 * - Greeting deadline (DESIGN §9): a connection that has not completed its greeting in `greetingTimeoutMs`
 *   is closed, so idle sockets cannot pile up; the deadline is cleared once greeted or closed.
 * - `onClose` reports the session the connection carried (null when it never had one).
 * Relies on: `greet` settling exactly once (null for a refusal it already answered).
 */
import { newNonce } from "../io/greeting-proofs.js";
import type { Clock, MessageConnection, Timer } from "../io/world.js";
import type { Logger } from "../io/log.js";
import { PROTOCOL_VERSION, WireError, type Body, type GreetingRequest, type Message } from "../protocol/messages.js";

/** The connection's state between HELLO and GREETING: both nonces. */
export interface HelloState {
  readonly clientNonce: Uint8Array;
  readonly serverNonce: Uint8Array;
}

export interface ConnectionHandlers<S> {
  readonly clock: Clock;
  readonly greetingTimeoutMs: number;
  readonly clusterId: string;
  /** Lines about connections that never greeted (throttled by the server). */
  readonly connectionLog: Logger;
  isStopping(): boolean;
  onGreetingTimeout(): void;
  /** Answers a request on this connection outside any session. */
  answer(header: Message["header"], error: WireError, payload: Body): void;
  /** Refuses a message (answering it if it is a request) and closes the connection. */
  refuse(message: Message, error: WireError, reason: string): void;
  /** Decides a greeting: the session, "admin", or null when refused (and answered). */
  greet(header: Message["header"], greeting: GreetingRequest, nonces: HelloState): Promise<S | "admin" | null>;
  onAdmin(message: Message): void;
  onMessage(session: S, message: Message): void;
  onClose(session: S | null, reason: string): void;
}

type State<S> = { phase: "new" } | { phase: "hello"; nonces: HelloState } | { phase: "greeting" } | { phase: "admin" } | { phase: "session"; session: S } | { phase: "refused" };

export function serveConnection<S>(connection: MessageConnection, h: ConnectionHandlers<S>): void {
  let state: State<S> = { phase: "new" };
  const backlog: Message[] = [];
  const greetingMs = h.greetingTimeoutMs;
  let greetingTimer: Timer | null = h.clock.setTimeout(() => {
    greetingTimer = null;
    if (state.phase !== "new" && state.phase !== "hello" && state.phase !== "greeting") return;
    h.onGreetingTimeout();
    const reason = `no greeting within ${greetingMs} ms`;
    h.connectionLog(`closing connection from ${connection.remoteAddress}: ${reason}`);
    connection.close(reason);
  }, greetingMs);
  const greeted = (): void => {
    if (greetingTimer !== null) h.clock.clearTimeout(greetingTimer);
    greetingTimer = null;
  };
  const deliver = (message: Message): void => {
    if (state.phase === "admin") h.onAdmin(message);
    else if (state.phase === "session") h.onMessage(state.session, message);
  };
  connection.start({
    onMessage: (message) => {
      if (state.phase === "session") {
        // The usual case first: a greeted client's message (a second greeting is refused below).
        const kind = message.payload.kind;
        if (kind !== "greeting-request" && kind !== "hello-request") {
          h.onMessage(state.session, message);
          return;
        }
      }
      if (state.phase === "new") {
        // The greeting (docs/protocol.md §6.1): HELLO first, with the client's nonce; we answer with ours.
        if (message.payload.kind !== "hello-request") {
          h.refuse(message, WireError.EPROTO, `the first message must be HELLO (protocol version ${PROTOCOL_VERSION})`);
          return;
        }
        const hello = message.payload.body;
        if (hello.protocolVersion !== PROTOCOL_VERSION) {
          h.refuse(message, WireError.EAUTH, `protocol version ${hello.protocolVersion} is not supported (this server speaks ${PROTOCOL_VERSION})`);
          return;
        }
        const serverNonce = newNonce();
        state = { phase: "hello", nonces: { clientNonce: hello.nonce, serverNonce } };
        h.answer(message.header, WireError.NONE, {
          kind: "hello-response",
          body: { clusterId: h.clusterId, protocolVersion: PROTOCOL_VERSION, nonce: serverNonce },
        });
        return;
      }
      if (state.phase === "hello") {
        if (message.payload.kind !== "greeting-request") {
          h.refuse(message, WireError.EPROTO, "the second message must be a greeting");
          return;
        }
        const nonces = state.nonces;
        state = { phase: "greeting" };
        void h.greet(message.header, message.payload.body, nonces).then((result) => {
          state = result === null ? { phase: "refused" } : result === "admin" ? { phase: "admin" } : { phase: "session", session: result };
          if (result === null) return;
          greeted();
          for (const queued of backlog.splice(0)) deliver(queued);
        });
        return;
      }
      if (message.payload.kind === "greeting-request" || message.payload.kind === "hello-request") {
        h.refuse(message, WireError.EPROTO, "a second greeting on one connection");
        return;
      }
      if (state.phase === "greeting") backlog.push(message);
      else deliver(message);
    },
    onClose: (reason) => {
      greeted();
      h.onClose(state.phase === "session" ? state.session : null, reason);
      if (state.phase !== "session" && !h.isStopping() && !/peer closed|no greeting within/.test(reason)) {
        h.connectionLog(`connection from ${connection.remoteAddress} closed: ${reason}`);
      }
    },
  });
}
