/**
 * Framed TCP connections (DESIGN §5 io/): turns a `node:net` socket into a stream of decoded keylock
 * messages and a `send()` that batches every frame queued during one event-loop turn into one write.
 *
 * Guarantees:
 * - Messages are handed to `onMessage` in the order they arrived; frames are written in `send()` order.
 * - A malformed frame or an oversize length closes this connection only, with the reason passed to
 *   `onClose` (and nothing after it is delivered). Nothing here throws into the caller's event loop.
 * - The send queue is bounded (`sendQueueBytesMax`): a peer that stops reading is disconnected rather
 *   than growing our memory without limit.
 * - Sockets use noDelay and keepalive.
 * Relies on: the codec to validate every field; the owner to treat onClose as final.
 */
import net from "node:net";
import { FrameDecoder, encodeMessage } from "../protocol/codec.js";
import type { Message } from "../protocol/messages.js";

export const SEND_QUEUE_BYTES_MAX = 64 * 1024 * 1024;
export const KEEPALIVE_IDLE_MS = 5_000;

export interface ConnectionHandlers {
  onMessage(message: Message): void;
  onClose(reason: string): void;
}

export class FramedConnection {
  readonly socket: net.Socket;
  readonly remoteAddress: string;
  private readonly decoder = new FrameDecoder();
  private handlers: ConnectionHandlers | null = null;
  private pending: Uint8Array[] = [];
  private flushScheduled = false;
  private closed = false;
  private closeReason = "";

  constructor(socket: net.Socket) {
    this.socket = socket;
    this.remoteAddress = formatAddress(socket.remoteAddress, socket.remotePort);
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
    this.socket.on("data", (chunk: Buffer) => this.onData(chunk));
    this.socket.resume();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Queues a message; returns false when the connection is closed (the message is dropped). */
  send(message: Message): boolean {
    if (this.closed) return false;
    let frame: Uint8Array;
    try {
      frame = encodeMessage(message);
    } catch (error) {
      this.close(`cannot encode outgoing message: ${(error as Error).message}`);
      return false;
    }
    this.pending.push(frame);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      process.nextTick(() => this.flush());
    }
    return true;
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.closed || this.pending.length === 0) return;
    const frames = this.pending;
    this.pending = [];
    const data = frames.length === 1 ? frames[0]! : Buffer.concat(frames);
    this.socket.write(data);
    if (this.socket.writableLength > SEND_QUEUE_BYTES_MAX) {
      this.close(`peer is not reading: more than ${SEND_QUEUE_BYTES_MAX} bytes queued`);
    }
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    let messages: Message[];
    try {
      messages = this.decoder.push(chunk);
    } catch (error) {
      this.close(`malformed input: ${(error as Error).message}`);
      return;
    }
    for (const message of messages) {
      if (this.closed) return;
      this.handlers?.onMessage(message);
    }
  }

  /** Closes the connection (flushing what was queued) and reports `reason` once. Idempotent. */
  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    if (this.pending.length > 0) {
      const frames = this.pending;
      this.pending = [];
      this.socket.end(Buffer.concat(frames));
    } else {
      this.socket.end();
    }
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

export function connectTcp(host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port, noDelay: true });
    socket.pause();
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`connect to ${formatAddress(host, port)} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      resolve(socket);
    });
    socket.once("error", (error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(error);
    });
  });
}
