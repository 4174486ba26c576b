/**
 * The protocol floor for the one-key rows (hand-off, 8 clients on one key): the least a cache-coherent lock
 * of keylock's shape can cost in Node on this machine. A bare Node server keeps one key's holder and a FIFO
 * of requesters; a holder keeps its grant cached until the server asks for it back (invalidation), answers
 * at once when it is idle or at release when it is in use, and a requester is granted when the holder has
 * answered: the same messages, hops and coalescing as keylock (grant and invalidation in one write when
 * someone waits; an answer and the next request in one write per tick), with none of its work (no codec
 * beyond a type byte, no sessions, modes, fencing tokens, limits, metrics or recovery).
 *
 * Frames are 4-byte big-endian length + body, each the size of the echo floor's frame (a cold lock request),
 * the body's first byte its type: REQUEST and ANSWER from clients, GRANT and INVALIDATE from the server.
 * One key per server process; a client that closes its connection gives its place back, and a second REQUEST
 * from a client that already asked is a harness bug and throws.
 *
 * Run as a process it prints "relay: listening on PORT" (127.0.0.1) and serves until killed. Relies on: a
 * loopback TCP stack; nothing of keylock's (the frames only borrow ECHO_FRAME's size).
 */
import net from "node:net";
import { resolve as resolvePath } from "node:path";
import { fileURLToPath } from "node:url";
import { ECHO_FRAME } from "./echo-server.js";

const REQUEST = 1;
const ANSWER = 2;
const GRANT = 3;
const INVALIDATE = 4;

function frameOf(type: number): Buffer {
  const frame = Buffer.from(ECHO_FRAME);
  frame[4] = type;
  return frame;
}
const FRAMES: Buffer[] = [Buffer.alloc(0), frameOf(REQUEST), frameOf(ANSWER), frameOf(GRANT), frameOf(INVALIDATE)];
const FRAME_BYTES = ECHO_FRAME.length;

/** Splits a byte stream into frame types (every frame is FRAME_BYTES long). */
class FrameTypes {
  #partial: Buffer | null = null;
  push(chunk: Buffer, onType: (type: number) => void): void {
    let bytes = chunk;
    if (this.#partial !== null) {
      bytes = Buffer.concat([this.#partial, chunk]);
      this.#partial = null;
    }
    let at = 0;
    for (; at + FRAME_BYTES <= bytes.length; at += FRAME_BYTES) onType(bytes[at + 4]!);
    if (at < bytes.length) this.#partial = Buffer.from(bytes.subarray(at));
  }
}

/** Frames queued for one socket in this tick, written together at its end (as keylock's connections do). */
class Outbox {
  #queued: Buffer[] = [];
  constructor(private readonly socket: net.Socket) {}
  send(type: number): void {
    if (this.#queued.push(FRAMES[type]!) === 1) process.nextTick(() => this.flush());
  }
  flush(): void {
    const queued = this.#queued;
    if (queued.length === 0) return;
    this.#queued = [];
    this.socket.write(queued.length === 1 ? queued[0]! : Buffer.concat(queued));
  }
}

/** Closed-loop client of the relay: `acquire()` resolves (with this client, a handle as keylock's) once the key is held; `release()` gives it back locally. */
export class RelayClient {
  readonly #out: Outbox;
  #cached = false;
  #held = false;
  #requested = false;
  #invalidated = false;
  #granted: ((client: RelayClient) => void) | null = null;
  /** Called when the server took the key back (this client answered an invalidation). */
  onTakenAway: (() => void) | null = null;

  private constructor(private readonly socket: net.Socket) {
    this.#out = new Outbox(socket);
    const frames = new FrameTypes();
    socket.on("data", (chunk: Buffer) => frames.push(chunk, (type) => this.#onFrame(type)));
    socket.on("error", () => undefined);
  }

  static open(port: number): Promise<RelayClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: "127.0.0.1", port, noDelay: true }, () => resolve(new RelayClient(socket)));
      socket.once("error", reject);
    });
  }

  acquire(): Promise<RelayClient> {
    if (this.#held || this.#granted !== null) throw new Error("relay client: one acquire at a time");
    if (this.#cached && !this.#invalidated) {
      this.#held = true;
      return Promise.resolve(this);
    }
    return new Promise((resolve) => {
      this.#granted = resolve;
      if (!this.#requested) {
        this.#requested = true;
        this.#out.send(REQUEST);
      }
    });
  }

  release(): void {
    this.#held = false;
    if (this.#invalidated) this.#answer();
  }

  close(): void {
    this.socket.destroy();
  }

  #answer(): void {
    this.#invalidated = false;
    this.#cached = false;
    this.#out.send(ANSWER);
    this.onTakenAway?.();
  }

  #onFrame(type: number): void {
    if (type === GRANT) {
      this.#requested = false;
      this.#cached = true;
      const granted = this.#granted;
      this.#granted = null;
      this.#held = granted !== null;
      granted?.(this);
    } else if (type === INVALIDATE) {
      this.#invalidated = true;
      if (!this.#held) this.#answer();
    }
  }
}

/** The relay server: one key, its holder, a FIFO of requesters. */
function serve(): void {
  let holder: Outbox | null = null;
  let holderAsked = false;
  const waiting: Outbox[] = [];
  const grantNext = (): void => {
    holder = waiting.shift() ?? null;
    holderAsked = false;
    if (holder === null) return;
    holder.send(GRANT);
    if (waiting.length > 0) askHolder();
  };
  const askHolder = (): void => {
    if (holder === null || holderAsked) return;
    holderAsked = true;
    holder.send(INVALIDATE);
  };
  const server = net.createServer({ noDelay: true }, (socket) => {
    const out = new Outbox(socket);
    const frames = new FrameTypes();
    socket.on("data", (chunk: Buffer) =>
      frames.push(chunk, (type) => {
        if (type === REQUEST) {
          if (waiting.includes(out) || holder === out) throw new Error("relay: a second request from one client");
          waiting.push(out);
          if (holder === null) grantNext();
          else askHolder();
        } else if (type === ANSWER && holder === out) {
          grantNext();
        }
      }),
    );
    socket.on("error", () => socket.destroy());
    // A client that leaves gives its place back (the last of a row's loops ends while the other waits).
    socket.on("close", () => {
      const at = waiting.indexOf(out);
      if (at >= 0) waiting.splice(at, 1);
      if (holder === out) grantNext();
    });
  });
  server.listen(0, "127.0.0.1", () => {
    console.log(`relay: listening on ${(server.address() as net.AddressInfo).port}`);
  });
}

const isMain = process.argv[1] !== undefined && resolvePath(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) serve();
