/**
 * Framed TCP connections (DESIGN §5 io/): turns a `node:net` socket into a stream of decoded keylock
 * messages and a `send()` that batches frames into one write: those queued while a received chunk's
 * messages are handled go out once they all were (no tick to schedule: a request's answer leaves in its
 * own read callback), any others at the end of the current tick (`process.nextTick`).
 *
 * Guarantees:
 * - Messages are handed to `onMessage` in the order they arrived; frames are written in `send()` order.
 * - A malformed frame or an oversize length closes this connection only, with the reason passed to
 *   `onClose` (and nothing after it is delivered). Nothing here throws into the caller's event loop.
 * - The send queue is bounded (`sendQueueBytesMax`): a peer that stops reading is disconnected rather
 *   than growing our memory without limit.
 * - Sockets use noDelay and keepalive.
 * - Reading: a socket opened by `connectTcp` reads through Node's `onread` (one buffer per connection,
 *   reused for every read: no buffer allocated per read, no stream machinery, no tick per read); any
 *   other socket (accepted ones, TLS) through 'data' events. Either way the bytes are decoded before the
 *   next read can overwrite them (the codec copies what it keeps: frame.ts, codec.ts), and nothing is
 *   read before `start()` (bytes wait in the socket).
 * - TLS (DESIGN §9) wraps the byte stream and changes nothing above it: a `tls.TLSSocket` is a
 *   `net.Socket`, so FramedConnection serves both. `connectTls` resolves only once the handshake is done
 *   and the server's certificate verified; `tlsAuthFailure` tells an authentication failure (a certificate
 *   refused by either side, a hostname mismatch) from a transient network error, with a message naming it.
 * Relies on: the codec to validate every field; the owner to treat onClose as final.
 */
import net from "node:net";
import tls from "node:tls";
import { FrameDecoder, encodeFrameBuffer } from "../protocol/codec.js";
import type { Message } from "../protocol/messages.js";
import { SEND_QUEUE_BYTES_MAX } from "../core/limits.js";
export { SEND_QUEUE_BYTES_MAX };

export const KEEPALIVE_IDLE_MS = 5_000;

/** Bytes of the buffer each `connectTcp` socket reads into (Node's own reads allocate 64 KiB each). */
export const READ_BUFFER_BYTES = 64 * 1024;

/**
 * Where a `connectTcp` socket's reads go: its FramedConnection once started. Bytes read before that
 * (none are: the socket is paused until `start()`) would be kept as copies in `early`, never lost.
 */
interface ReadTarget {
  deliver: ((bytes: Uint8Array) => void) | null;
  early: Uint8Array[];
}
const readTargets = new WeakMap<net.Socket, ReadTarget>();

export interface ConnectionHandlers {
  onMessage(message: Message): void;
  onClose(reason: string): void;
}

export class FramedConnection {
  readonly socket: net.Socket;
  readonly remoteAddress: string;
  private readonly decoder = new FrameDecoder();
  /** The messages of the chunk being handed out (slots cleared as they go): reused by every `onData`. */
  private readonly decoded: (Message | undefined)[] = [];
  private handlers: ConnectionHandlers | null = null;
  /**
   * Frames queued since the last flush: the first in `first`, any others in `more[0..moreCount)` (an
   * array kept across flushes, its used slots cleared at each): the usual turn of one frame allocates no
   * array, and a turn of several none after the first.
   */
  private first: Buffer | null = null;
  private more: (Buffer | null)[] = [];
  private moreCount = 0;
  private flushScheduled = false;
  /** True while `onData` hands a chunk's messages out: it flushes what they queued when done. */
  private delivering = false;
  private closed = false;
  private closeReason = "";
  /** Set when the socket reads through `onread` (connectTcp): where those reads go. */
  private readonly readTarget: ReadTarget | null;

  constructor(socket: net.Socket) {
    this.socket = socket;
    this.remoteAddress = formatAddress(socket.remoteAddress, socket.remotePort);
    this.readTarget = readTargets.get(socket) ?? null;
    socket.setNoDelay(true);
    socket.setKeepAlive(true, KEEPALIVE_IDLE_MS);
    socket.on("error", (error) => this.close(`socket error: ${error.message}`));
    socket.on("close", () => this.close(this.closeReason || "peer closed the connection"));
    socket.on("end", () => this.close("peer closed the connection"));
  }

  /** Starts delivery; bytes that arrive before this wait in the socket. */
  start(handlers: ConnectionHandlers): void {
    this.handlers = handlers;
    if (this.closed) {
      handlers.onClose(this.closeReason);
      return;
    }
    const target = this.readTarget;
    if (target !== null) {
      target.deliver = (bytes) => this.onData(bytes);
      for (const bytes of target.early.splice(0)) this.onData(bytes);
    } else {
      this.socket.on("data", (chunk: Buffer) => this.onData(chunk));
    }
    this.socket.resume();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Queues a message; returns false when the connection is closed (the message is dropped). */
  send(message: Message): boolean {
    if (this.closed) return false;
    let frame: Buffer;
    try {
      frame = encodeFrameBuffer(message);
    } catch (error) {
      this.close(`cannot encode outgoing message: ${(error as Error).message}`);
      return false;
    }
    if (this.first === null) this.first = frame;
    else this.more[this.moreCount++] = frame;
    if (!this.flushScheduled && !this.delivering) {
      this.flushScheduled = true;
      process.nextTick(this.flushBound);
    }
    return true;
  }

  /** `flush` bound once: no closure allocated per event-loop turn that sends. */
  private readonly flushBound = (): void => this.flush();

  private flush(): void {
    this.flushScheduled = false;
    if (this.closed || this.first === null) return;
    this.socket.write(this.takePending()!);
    if (this.socket.writableLength > SEND_QUEUE_BYTES_MAX) {
      this.close(`peer is not reading: more than ${SEND_QUEUE_BYTES_MAX} bytes queued`);
    }
  }

  /** What was queued since the last flush as one buffer (null when nothing was); the queue is then empty. */
  private takePending(): Buffer | null {
    const first = this.first;
    if (first === null) return null;
    this.first = null;
    const count = this.moreCount;
    if (count === 0) return first;
    const more = this.more;
    let length = first.length;
    for (let i = 0; i < count; i++) length += more[i]!.length;
    const data = Buffer.allocUnsafe(length);
    data.set(first, 0);
    let pos = first.length;
    for (let i = 0; i < count; i++) {
      const frame = more[i]!;
      data.set(frame, pos);
      pos += frame.length;
      more[i] = null;
    }
    this.moreCount = 0;
    return data;
  }

  private onData(chunk: Uint8Array): void {
    if (this.closed) return;
    // The chunk's messages go into one array kept across chunks (no array per read), each slot cleared
    // once handed out; a chunk arriving while one is being handed out (never seen) gets an array of its own.
    const reentered = this.delivering;
    const messages = reentered ? [] : this.decoded;
    let count: number;
    try {
      count = this.decoder.pushInto(chunk, messages);
    } catch (error) {
      messages.fill(undefined);
      this.close(`malformed input: ${(error as Error).message}`);
      return;
    }
    this.delivering = true;
    try {
      for (let i = 0; i < count; i++) {
        const message = messages[i]!;
        messages[i] = undefined;
        if (this.closed) continue; // (clearing the rest)
        this.handlers?.onMessage(message);
      }
    } finally {
      this.delivering = reentered;
      // What the messages queued goes out now, in one write (close() already flushed if one closed us).
      if (this.first !== null) this.flush();
    }
  }

  /** Closes the connection (flushing what was queued) and reports `reason` once. Idempotent. */
  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    const data = this.takePending();
    if (data !== null) this.socket.end(data);
    else this.socket.end();
    // Give the peer a moment to read what we flushed, then make sure the socket is gone.
    setTimeout(() => this.socket.destroy(), 1000).unref();
    this.handlers?.onClose(reason);
  }

  /** Drops the connection at once, without flushing (used for crash-like shutdown in tests). */
  destroy(reason: string): void {
    if (!this.closed) {
      this.closed = true;
      this.closeReason = reason;
      this.handlers?.onClose(reason);
    }
    this.socket.destroy();
  }
}

export function formatAddress(host: string | undefined, port: number | undefined): string {
  if (!host) return "unknown";
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Parses "HOST:PORT" or "[V6]:PORT"; throws a message naming the bad part. */
export function parseAddress(text: string): { host: string; port: number } {
  const match = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:[\]]+):(\d+)$/.exec(text);
  if (!match) throw new Error(`address "${text}" is not HOST:PORT`);
  const port = Number(match[2]);
  if (!Number.isInteger(port) || port < 1 || port > 65534) throw new Error(`port in "${text}" must be 1..65534`);
  return { host: match[1]!, port };
}

/**
 * A connected, paused socket for a FramedConnection (its only reader: the socket reads through `onread`
 * into one buffer of its own and emits no 'data' events).
 */
export function connectTcp(host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const target: ReadTarget = { deliver: null, early: [] };
    // A Buffer, so that what the codec reads from it is one (keys are decoded by Buffer#toString).
    const buffer = Buffer.alloc(READ_BUFFER_BYTES);
    const socket = net.connect({
      host,
      port,
      noDelay: true,
      onread: {
        buffer,
        callback: (length: number, bytes: Uint8Array): boolean => {
          const view = bytes.subarray(0, length);
          if (target.deliver !== null) {
            target.deliver(view);
            return true;
          }
          target.early.push(Buffer.from(view)); // a copy: the buffer is reused by the next read
          return false; // and stop reading until start()
        },
      },
    });
    readTargets.set(socket, target);
    socket.pause();
    let settled = false;
    // Decided after the poll phase (setImmediate): a connect that completed while this process was
    // stalled past the deadline counts (as the greeting's and the election's deadlines: B41).
    const timer = setTimeout(
      () =>
        setImmediate(() => {
          if (settled) return;
          socket.destroy();
          reject(new Error(`connect to ${formatAddress(host, port)} timed out after ${timeoutMs} ms`));
        }),
      timeoutMs,
    );
    socket.once("connect", () => {
      settled = true;
      clearTimeout(timer);
      socket.removeAllListeners("error");
      resolve(socket);
    });
    socket.once("error", (error) => {
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      reject(error);
    });
  });
}

/** Client TLS options (node:tls); `servername` defaults to the host of the address when it is a name. */
export type ClientTlsOptions = Pick<
  tls.ConnectionOptions,
  "ca" | "cert" | "key" | "passphrase" | "pfx" | "servername" | "rejectUnauthorized" | "minVersion" | "maxVersion" | "ciphers" | "checkServerIdentity"
>;

/** Why a TLS attempt failed: `auth` failures (certificates) are not worth retrying; others may be transient. */
export class TlsConnectError extends Error {
  constructor(
    message: string,
    readonly auth: boolean,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/**
 * Connects with TLS and resolves once the handshake finished and the server's certificate was verified
 * (unless `rejectUnauthorized: false`). Rejects with a TlsConnectError naming the cause.
 */
export function connectTls(host: string, port: number, timeoutMs: number, options: ClientTlsOptions): Promise<tls.TLSSocket> {
  const address = formatAddress(host, port);
  return new Promise((resolve, reject) => {
    const servername = options.servername ?? (net.isIP(host) === 0 ? host : undefined);
    const socket = tls.connect({ ...options, host, port, ...(servername === undefined ? {} : { servername }) });
    socket.pause();
    let tcpConnected = false;
    socket.once("connect", () => (tcpConnected = true));
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new TlsConnectError(
          tcpConnected
            ? `TLS handshake with ${address} did not finish within ${timeoutMs} ms: is it a TLS member?`
            : `connect to ${address} timed out after ${timeoutMs} ms`,
          false,
        ),
      );
    }, timeoutMs);
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      resolve(socket);
    });
    socket.once("error", (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      socket.destroy();
      const auth = tlsAuthFailure(error);
      if (auth !== null) {
        reject(new TlsConnectError(`TLS handshake with ${address} failed: ${auth}`, true, { cause: error }));
      } else if (tcpConnected) {
        reject(
          new TlsConnectError(
            `TLS handshake with ${address} failed: ${error.message} (is it a plaintext member? then connect without tls)`,
            false,
            { cause: error },
          ),
        );
      } else {
        reject(error);
      }
    });
  });
}

/** Certificate-verification error codes of node:tls / OpenSSL that mean "this peer is not who we trust". */
const CERT_ERROR_CODES = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_REVOKED",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "CERT_SIGNATURE_FAILURE",
  "INVALID_CA",
  "INVALID_PURPOSE",
  "PATH_LENGTH_EXCEEDED",
  "HOSTNAME_MISMATCH",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/**
 * When `error` says a TLS peer refused or was refused authentication (our verification of its certificate
 * failed, or it sent an alert about ours), a message naming the cause; otherwise null.
 */
export function tlsAuthFailure(error: NodeJS.ErrnoException): string | null {
  const code = error.code ?? "";
  if (CERT_ERROR_CODES.has(code)) {
    return `the server's certificate was not accepted: ${error.message} (${code}); check the CA given to the client (tls.ca / --tls-ca) and the name or address in the certificate`;
  }
  if (/^ERR_SSL_.*ALERT_(CERTIFICATE_REQUIRED|BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_UNKNOWN|UNSUPPORTED_CERTIFICATE|CERTIFICATE_REVOKED|CERTIFICATE_EXPIRED|ACCESS_DENIED|HANDSHAKE_FAILURE)$/.test(code)) {
    return `the server refused this client's certificate: ${error.message} (${code}); a member run with --tls-client-auth needs a client certificate signed by its --tls-ca (tls.cert and tls.key / --tls-cert and --tls-key)`;
  }
  return null;
}
