/**
 * LEGACY (sim/legacy-cluster/): part of the old mirror simulator, kept only because sim/cluster.ts still
 * runs on it; the lock simulator is sim/drivers.ts over the production drivers (docs/simulation.md).
 *
 * The simulated network: sockets between one client and the server, each with two FIFO directions and
 * a random delay per packet, and the ways a socket ends.
 *
 * Guarantees:
 * - Within one direction of one socket delivery is FIFO (a packet is never delivered before one sent
 *   earlier on it); each packet draws its own delay, so different sockets, and the two directions of
 *   one socket, interleave arbitrarily.
 * - A socket carries what a TCP connection carries: every socket starts with the client's greeting; a
 *   packet sent on a closed socket goes nowhere; nothing is duplicated within a socket.
 * - `close()` ends a socket. A graceful close (one side closes after flushing, like `connection.close()`)
 *   delivers everything already sent, and the far side notices the close after the last packet. An
 *   abrupt end (reset, crash) loses what is in flight, except that a random *prefix* of it may still be
 *   delivered (bytes already on their way; never a gap, as TCP never delivers past a lost segment).
 *   Each side notices the end after its own delay; a packet delivered after the receiver noticed (or
 *   replaced) the socket must be ignored by it: it belongs to an old socket. The endpoints check that
 *   (world.ts, client-node.ts, server-node.ts), as the real drivers do (`connection !== this.connection`).
 * - Duplication across sockets is the session layer's business: a resend on a new socket may repeat
 *   what an old one delivered (exactly-once per server through seq, at-least-once across servers).
 * Relies on: the Clock breaking ties by scheduling order (FIFO for equal delivery times); the owner
 * registering the handlers before the first packet.
 */
import type { Rid } from "../../src/core/lock-messages.js";
import type { Message } from "../../src/protocol/messages.js";
import type { Clock } from "./base.js";
import type { Prng } from "../prng.js";

export interface NetworkConfig {
  /** Usual one-way delay, drawn uniformly in [delayMinUs, delayMaxUs]. */
  readonly delayMinUs: number;
  readonly delayMaxUs: number;
  /** With this probability a packet is slow instead: uniform in [delayMaxUs, spikeMaxUs]. */
  readonly spikeChance: number;
  readonly spikeMaxUs: number;
}

/** The greeting that opens every socket (reference §1.3; the sim leaves out cluster id, version, proof). */
export interface SimGreeting {
  readonly rid: Rid;
  /** The term of the last server this client greeted successfully; 0n before any. */
  readonly lastServerTerm: bigint;
  readonly farewell: boolean;
}

export type UpPacket =
  | { readonly kind: "greeting"; readonly greeting: SimGreeting }
  | { readonly kind: "message"; readonly message: Message };

export type DownPacket =
  | { readonly kind: "greeting-response"; readonly serverTerm: bigint }
  | { readonly kind: "greeting-refused"; readonly code: "EFENCED" | "ENOTLEADER"; readonly reason: string }
  | { readonly kind: "message"; readonly message: Message };

interface Packet {
  cancelled: boolean;
}

export class Socket {
  open = true;
  /** Latest scheduled delivery per direction: a later packet is never delivered before it (FIFO). */
  upLastUs = 0;
  downLastUs = 0;
  /** Packets sent and not yet delivered, oldest first. */
  readonly up: Packet[] = [];
  readonly down: Packet[] = [];
  constructor(
    readonly id: number,
    readonly client: number,
  ) {}

  get name(): string {
    return `sock${this.id}`;
  }
}

/** How a socket ends; a side with no notice delay closed it itself (and knows at once). */
export interface CloseHow {
  /** Graceful: everything sent is delivered. Abrupt: what is in flight is lost but for a random prefix. */
  readonly graceful: boolean;
  /** Abrupt only: the chance that some prefix of what is in flight still arrives. */
  readonly lateChance?: number;
  readonly clientNoticeUs?: number;
  readonly serverNoticeUs?: number;
}

export class Network {
  readonly #clock: Clock;
  readonly #prng: Prng;
  readonly #config: NetworkConfig;
  #nextSocketId = 1;
  #inFlight = 0;
  deliverUp: (socket: Socket, packet: UpPacket) => void = () => {};
  deliverDown: (socket: Socket, packet: DownPacket) => void = () => {};
  /** A side noticed that the socket ended (it did not close it itself). */
  noticeClosed: (socket: Socket, side: "client" | "server") => void = () => {};

  constructor(clock: Clock, prng: Prng, config: NetworkConfig) {
    this.#clock = clock;
    this.#prng = prng;
    this.#config = config;
  }

  /** A new socket from `client` to the server (the caller sends the greeting first). */
  open(client: number): Socket {
    return new Socket(this.#nextSocketId++, client);
  }

  /** False when the socket is closed: the packet goes nowhere. */
  sendUp(socket: Socket, packet: UpPacket): boolean {
    return this.#send(socket, "up", () => this.deliverUp(socket, packet));
  }

  sendDown(socket: Socket, packet: DownPacket): boolean {
    return this.#send(socket, "down", () => this.deliverDown(socket, packet));
  }

  /** Packets sent and not yet delivered or dropped, over every socket. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Ends a socket (see the module contract). Closing a closed socket does nothing. */
  close(socket: Socket, how: CloseHow): void {
    if (!socket.open) return;
    socket.open = false;
    if (!how.graceful) {
      for (const queue of [socket.up, socket.down]) {
        const keep = this.#prng.chance(how.lateChance ?? 0) ? this.#prng.int(0, queue.length) : 0;
        for (let i = keep; i < queue.length; i++) queue[i]!.cancelled = true;
      }
    }
    const now = this.#clock.nowUs;
    if (how.clientNoticeUs !== undefined) {
      const atUs = Math.max(now + how.clientNoticeUs, how.graceful ? socket.downLastUs : now);
      this.#clock.scheduleAt(atUs, () => this.noticeClosed(socket, "client"));
    }
    if (how.serverNoticeUs !== undefined) {
      const atUs = Math.max(now + how.serverNoticeUs, how.graceful ? socket.upLastUs : now);
      this.#clock.scheduleAt(atUs, () => this.noticeClosed(socket, "server"));
    }
  }

  #drawDelayUs(): number {
    const cfg = this.#config;
    if (this.#prng.chance(cfg.spikeChance)) return this.#prng.int(cfg.delayMaxUs, cfg.spikeMaxUs);
    return this.#prng.int(cfg.delayMinUs, cfg.delayMaxUs);
  }

  #send(socket: Socket, direction: "up" | "down", deliver: () => void): boolean {
    if (!socket.open) return false;
    const wantedUs = this.#clock.nowUs + this.#drawDelayUs();
    const packet: Packet = { cancelled: false };
    let atUs: number;
    let queue: Packet[];
    if (direction === "up") {
      atUs = Math.max(wantedUs, socket.upLastUs);
      socket.upLastUs = atUs;
      queue = socket.up;
    } else {
      atUs = Math.max(wantedUs, socket.downLastUs);
      socket.downLastUs = atUs;
      queue = socket.down;
    }
    queue.push(packet);
    this.#inFlight++;
    // Equal times keep FIFO: the clock breaks ties by scheduling order, so this packet is the queue head.
    this.#clock.scheduleAt(atUs, () => {
      queue.shift();
      this.#inFlight--;
      if (!packet.cancelled) deliver();
    });
    return true;
  }
}
