/**
 * Quorum datagrams (reference §1.4, §7.2): the election's messages between members over UDP, IPv4 or
 * IPv6, one 32-byte datagram per message, little endian:
 *
 *   offset  size  field
 *        0     8  cluster hash: the first 8 bytes of SHA-256(cluster id), so members of another
 *                 cluster (or a stale config) on the same address are told apart
 *        8     8  version, always 0
 *       16     8  term (u64)
 *       24     1  type: REQUEST_VOTE 0, VOTE 1, HEARTBEAT 2, RESIGNATION 3
 *       25     1  from: the sender's slot (0..14)
 *       26     2  zero
 *       28     4  CRC32C (Castagnoli) of bytes 0..27, seeded 0xFFFFFFFF, no final inversion
 *
 * Guarantees:
 * - Only well-formed messages reach the election: a datagram with the wrong size, a bad CRC, another
 *   cluster's hash, a non-zero version or padding, an unknown type, or a sender slot that is not
 *   configured (or is our own) is dropped and counted by reason; it never throws into the caller.
 * - Sends never block and never throw: a failed send is counted and logged once per peer until a send
 *   to it succeeds again (reference §7.2: heartbeat failures are counted, not fatal).
 * Relies on: the config naming every slot's address; datagrams being unreliable (the election copes
 * with loss, duplication and reordering).
 */
import dgram from "node:dgram";
import net from "node:net";
import { createHash } from "node:crypto";
import { lookup } from "node:dns/promises";
import { QUORUM_MESSAGE_TYPES, QUORUM_SLOTS_MAX, type QuorumMessage } from "../core/election.js";
import type { Logger } from "./log.js";

export const QUORUM_MESSAGE_BYTES = 32;
/** How long close() waits for datagrams already handed to the socket. */
export const CLOSE_FLUSH_MS_MAX = 200;
const CRC_OFFSET = 28;
const U64_MAX = (1n << 64n) - 1n;

// ---------------------------------------------------------------------------------------------------
// CRC32C, table driven (reflected polynomial 0x82F63B78).

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC32C of `bytes` starting from `seed`, without the final inversion (reference §1.4). */
export function crc32c(bytes: Uint8Array, seed = 0xffffffff): number {
  let crc = seed >>> 0;
  for (const byte of bytes) crc = (CRC32C_TABLE[(crc ^ byte) & 0xff]! ^ (crc >>> 8)) >>> 0;
  return crc;
}

/** The 8-byte cluster hash carried in every quorum message. */
export function clusterHash(clusterId: string): bigint {
  return createHash("sha256").update(clusterId, "utf8").digest().readBigUInt64LE(0);
}

export function encodeQuorumMessage(message: QuorumMessage, hash: bigint): Buffer {
  if (message.term < 0n || message.term > U64_MAX) throw new RangeError(`term ${message.term} is not a u64`);
  if (!Number.isInteger(message.from) || message.from < 0 || message.from >= QUORUM_SLOTS_MAX) {
    throw new RangeError(`slot ${message.from} is outside 0..${QUORUM_SLOTS_MAX - 1}`);
  }
  const type = QUORUM_MESSAGE_TYPES.indexOf(message.type);
  if (type < 0) throw new RangeError(`unknown quorum message type ${String(message.type)}`);
  const buf = Buffer.alloc(QUORUM_MESSAGE_BYTES);
  buf.writeBigUInt64LE(hash, 0);
  buf.writeBigUInt64LE(0n, 8);
  buf.writeBigUInt64LE(message.term, 16);
  buf.writeUInt8(type, 24);
  buf.writeUInt8(message.from, 25);
  buf.writeUInt32LE(crc32c(buf.subarray(0, CRC_OFFSET)), CRC_OFFSET);
  return buf;
}

export const DROP_REASONS = ["size", "crc", "cluster", "version", "padding", "type", "slot"] as const;
export type DropReason = (typeof DROP_REASONS)[number];

export type Decoded = { readonly ok: true; readonly message: QuorumMessage } | { readonly ok: false; readonly reason: DropReason };

/**
 * Validates and decodes one datagram. `configured` holds the slots a message may come from (every
 * configured slot but our own).
 */
export function decodeQuorumMessage(bytes: Uint8Array, hash: bigint, configured: ReadonlySet<number>): Decoded {
  if (bytes.length !== QUORUM_MESSAGE_BYTES) return { ok: false, reason: "size" };
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  if (buf.readUInt32LE(CRC_OFFSET) !== crc32c(buf.subarray(0, CRC_OFFSET))) return { ok: false, reason: "crc" };
  if (buf.readBigUInt64LE(0) !== hash) return { ok: false, reason: "cluster" };
  if (buf.readBigUInt64LE(8) !== 0n) return { ok: false, reason: "version" };
  if (buf.readUInt16LE(26) !== 0) return { ok: false, reason: "padding" };
  const type = QUORUM_MESSAGE_TYPES[buf.readUInt8(24)];
  if (type === undefined) return { ok: false, reason: "type" };
  const from = buf.readUInt8(25);
  if (!configured.has(from)) return { ok: false, reason: "slot" };
  return { ok: true, message: { type, term: buf.readBigUInt64LE(16), from } };
}

// ---------------------------------------------------------------------------------------------------
// The socket

export interface QuorumPeer {
  readonly slot: number;
  readonly host: string;
  readonly port: number;
}

export interface QuorumSocketOptions {
  readonly clusterId: string;
  /** Our slot; we bind its address. */
  readonly self: QuorumPeer;
  /** Every other configured slot. */
  readonly peers: readonly QuorumPeer[];
  readonly onMessage: (message: QuorumMessage) => void;
  readonly log: Logger;
}

export interface QuorumSocketStats {
  sent: number;
  sendErrors: number;
  received: number;
  dropped: Record<DropReason, number>;
}

interface Resolved {
  readonly slot: number;
  readonly address: string;
  readonly port: number;
  readonly family: 4 | 6;
  failing: boolean;
}

async function resolveHost(host: string): Promise<{ address: string; family: 4 | 6 }> {
  const literal = net.isIP(host);
  if (literal === 4 || literal === 6) return { address: host, family: literal };
  const found = await lookup(host);
  return { address: found.address, family: found.family === 6 ? 6 : 4 };
}

/**
 * dgram resolves every destination through `lookup` before sending, by default with dns.lookup, which
 * answers even an IP literal on a later process.nextTick. A member whose store answers synchronously
 * (SQLite) runs a long chain of promise continuations after broadcasting (ELECT, fencing, starting the
 * server) and nextTick callbacks wait until that chain ends, so its datagrams would leave only after it
 * already serves. Peers are resolved to literals once at open, so this lookup answers at once.
 */
function literalLookup(
  hostname: string,
  options: unknown,
  callback: (error: NodeJS.ErrnoException | null, address: string, family: number) => void,
): void {
  const family = net.isIP(hostname);
  if (family === 0) {
    const error: NodeJS.ErrnoException = new Error(`quorum peer address ${hostname} is not an IP literal`);
    error.code = "EINVAL";
    callback(error, hostname, 0);
    return;
  }
  void options;
  callback(null, hostname, family);
}

export class QuorumSocket {
  readonly stats: QuorumSocketStats = {
    sent: 0,
    sendErrors: 0,
    received: 0,
    dropped: Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>,
  };
  private closed = false;
  private inFlight = 0;
  private drained: (() => void) | null = null;

  private constructor(
    private readonly socket: dgram.Socket,
    private readonly hash: bigint,
    private readonly family: 4 | 6,
    private readonly peers: Map<number, Resolved>,
    private readonly log: Logger,
  ) {}

  /** Binds our slot's address (failing if it is in use) and resolves every peer's address once. */
  static async open(options: QuorumSocketOptions): Promise<QuorumSocket> {
    const self = await resolveHost(options.self.host);
    const peers = new Map<number, Resolved>();
    for (const peer of options.peers) {
      const resolved = await resolveHost(peer.host);
      peers.set(peer.slot, { slot: peer.slot, address: resolved.address, port: peer.port, family: resolved.family, failing: false });
    }
    const socket = dgram.createSocket({
      type: self.family === 6 ? "udp6" : "udp4",
      ipv6Only: self.family === 6,
      lookup: literalLookup,
    });
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind({ address: self.address, port: options.self.port, exclusive: true }, () => {
        socket.off("error", reject);
        resolve();
      });
    });
    const hash = clusterHash(options.clusterId);
    const quorum = new QuorumSocket(socket, hash, self.family, peers, options.log);
    const configured = new Set(peers.keys());
    socket.on("message", (bytes) => {
      const decoded = decodeQuorumMessage(bytes, hash, configured);
      if (!decoded.ok) {
        quorum.stats.dropped[decoded.reason]++;
        return;
      }
      quorum.stats.received++;
      options.onMessage(decoded.message);
    });
    socket.on("error", (error) => options.log(`quorum socket error (carrying on): ${error.message}`));
    return quorum;
  }

  send(to: number, message: QuorumMessage): void {
    const peer = this.peers.get(to);
    if (peer === undefined || this.closed) return;
    this.sendTo(peer, encodeQuorumMessage(message, this.hash));
  }

  broadcast(message: QuorumMessage): void {
    if (this.closed || this.peers.size === 0) return;
    const datagram = encodeQuorumMessage(message, this.hash);
    for (const peer of this.peers.values()) this.sendTo(peer, datagram);
  }

  private sendTo(peer: Resolved, datagram: Buffer): void {
    if (peer.family !== this.family) {
      this.failed(peer, `slot ${peer.slot} is IPv${peer.family} but our slot address is IPv${this.family}`);
      return;
    }
    this.inFlight++;
    this.socket.send(datagram, peer.port, peer.address, (error) => {
      if (error) this.failed(peer, error.message);
      else {
        this.stats.sent++;
        peer.failing = false;
      }
      if (--this.inFlight === 0) this.drained?.();
    });
  }

  private failed(peer: Resolved, why: string): void {
    this.stats.sendErrors++;
    if (!peer.failing) this.log(`quorum send to slot ${peer.slot} failed (counted, not fatal): ${why}`);
    peer.failing = true;
  }

  /**
   * Stops sending, lets the datagrams already handed to the socket go out (a leaving leader's last
   * RESIGNATION must not be cut off; bounded by CLOSE_FLUSH_MS_MAX), then closes. Idempotent.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.inFlight > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, CLOSE_FLUSH_MS_MAX);
        this.drained = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    await new Promise<void>((resolve) => this.socket.close(() => resolve()));
  }
}
