/**
 * Quorum datagrams (reference §1.4, §7.2): the election's messages between members over UDP, IPv4 or
 * IPv6, one datagram per message, little endian. A cluster without a secret sends 32 bytes (version 0);
 * a cluster formatted with a secret sends 48 (version 1), the same 32 bytes followed by a tag:
 *
 *   offset  size  field
 *        0     8  cluster hash: the first 8 bytes of SHA-256(cluster id), so members of another
 *                 cluster (or a stale config) on the same address are told apart
 *        8     8  version: 0 without a secret, 1 with one (tagged)
 *       16     8  term (u64)
 *       24     1  type: REQUEST_VOTE 0, VOTE 1, HEARTBEAT 2, RESIGNATION 3
 *       25     1  from: the sender's slot (0..SLOT_MAX, core/limits.ts)
 *       26     2  zero
 *       28     4  CRC32C (Castagnoli) of bytes 0..27, seeded 0xFFFFFFFF, no final inversion
 *       32    16  (version 1 only) tag: the first 16 bytes of HMAC-SHA256(quorum key, bytes 0..31), where
 *                 the quorum key is HKDF-SHA256(secret, salt = cluster id, info "keylock quorum v1"),
 *                 32 bytes (io/keys.ts)
 *
 * Guarantees:
 * - Only well-formed messages reach the election: a datagram with the wrong size, a bad CRC, another
 *   cluster's hash, a wrong version or non-zero padding, an unknown type, or a sender slot that is not
 *   configured (or is our own) is dropped and counted by reason; it never throws into the caller.
 *   (Terms are checked against TERM_MAX and the jump bound by the election itself, which knows our term.)
 * - Authentication (DESIGN §9), checked first, before any field is read: with a secret, a datagram that is
 *   not exactly 48 bytes (an untagged one, a truncated tag) or whose tag does not verify (forged, another
 *   secret, another cluster) is dropped as "auth"; the tag is compared in constant time
 *   (timingSafeEqual). Without a secret, a tagged (48-byte) datagram is dropped as "auth" too: its sender
 *   holds a secret this cluster was not formatted with. "auth" drops are logged on the 1st, 2nd, 4th...
 *   one. So with a secret only holders of the secret can vote, heartbeat or resign. A 16-byte (128-bit)
 *   tag leaves a forger one chance in 2^128 per datagram.
 * - Replays: the tag does not stop a captured datagram from being sent again; that is harmless because
 *   terms only grow: the election ignores a message of a term below its own, and a replay of the
 *   current term only repeats what its sender said in that term (a vote counted once, a heartbeat of
 *   the leader we follow). The one effect left is on liveness: someone who can both capture datagrams and
 *   send from a slot's address (spoof it) can replay a dead leader's current-term heartbeats to delay
 *   the election until they stop.
 * - Source rule (DESIGN §9): a datagram is accepted only if its source address AND port are the
 *   configured address of the slot it claims in `from`. Members send from the socket bound to their
 *   own slot address, so honest datagrams always pass; a stranger on another port (or host) cannot
 *   speak for a slot. Addresses are compared canonically (IPv4-mapped IPv6 as IPv4, IPv6 compressed);
 *   a slot's hostname is resolved once at open, to every address it names; a slot configured with a
 *   wildcard address (0.0.0.0, ::) can only run on this machine, so any of this machine's interface
 *   addresses counts for it, with its port. Drops are counted as "source" and logged on the 1st, 2nd,
 *   4th... one. Without a secret the rule is what stops a stranger; with a secret it applies as well
 *   (defense in depth: a leaked datagram key still needs the slot's address).
 * - Sends never block and never throw: a failed send is counted and logged once per peer until a send
 *   to it succeeds again (reference §7.2: heartbeat failures are counted, not fatal).
 * - The socket is bound through `Datagrams` (io/world.ts): node:dgram (`realDatagrams`) unless the
 *   simulator passes its own; every rule above runs the same on either.
 * Relies on: the config naming every slot's address; every member of a cluster with a secret being given
 * that secret (runtime/member.ts refuses to start otherwise); datagrams being unreliable (the election
 * copes with loss, duplication and reordering).
 */
import dgram from "node:dgram";
import net from "node:net";
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { lookup } from "node:dns/promises";
import { networkInterfaces } from "node:os";
import { QUORUM_MESSAGE_TYPES, type QuorumMessage } from "../core/election.js";
import { SLOT_MAX, U64_MAX } from "../core/limits.js";
import type { Logger } from "./log.js";
import { formatAddress } from "./tcp.js";
import { realClock, type Clock, type DatagramSocket, type DatagramSource, type Datagrams } from "./world.js";

/** An untagged datagram (a cluster without a secret), and the tagged part of a tagged one. */
export const QUORUM_MESSAGE_BYTES = 32;
export const QUORUM_TAG_BYTES = 16;
/** A tagged datagram (a cluster with a secret). */
export const QUORUM_TAGGED_MESSAGE_BYTES = QUORUM_MESSAGE_BYTES + QUORUM_TAG_BYTES;
const VERSION_UNTAGGED = 0n;
const VERSION_TAGGED = 1n;
/** How long close() waits for datagrams already handed to the socket. */
export const CLOSE_FLUSH_MS_MAX = 200;
const CRC_OFFSET = 28;

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

/** The tag of a tagged datagram: the first QUORUM_TAG_BYTES of HMAC-SHA256(key, its first 32 bytes). */
export function quorumTag(key: Uint8Array, head: Uint8Array): Buffer {
  return createHmac("sha256", key).update(head).digest().subarray(0, QUORUM_TAG_BYTES);
}

/**
 * One datagram: 32 bytes (version 0) when `key` is null, else 48 (version 1, tagged with `key`, the
 * cluster's quorum key from io/keys.ts).
 */
export function encodeQuorumMessage(message: QuorumMessage, hash: bigint, key: Uint8Array | null = null): Buffer {
  if (message.term < 0n || message.term > U64_MAX) throw new RangeError(`term ${message.term} is not a u64`);
  if (!Number.isInteger(message.from) || message.from < 0 || message.from > SLOT_MAX) {
    throw new RangeError(`slot ${message.from} is outside 0..${SLOT_MAX}`);
  }
  const type = QUORUM_MESSAGE_TYPES.indexOf(message.type);
  if (type < 0) throw new RangeError(`unknown quorum message type ${String(message.type)}`);
  const buf = Buffer.alloc(key === null ? QUORUM_MESSAGE_BYTES : QUORUM_TAGGED_MESSAGE_BYTES);
  buf.writeBigUInt64LE(hash, 0);
  buf.writeBigUInt64LE(key === null ? VERSION_UNTAGGED : VERSION_TAGGED, 8);
  buf.writeBigUInt64LE(message.term, 16);
  buf.writeUInt8(type, 24);
  buf.writeUInt8(message.from, 25);
  buf.writeUInt32LE(crc32c(buf.subarray(0, CRC_OFFSET)), CRC_OFFSET);
  if (key !== null) quorumTag(key, buf.subarray(0, QUORUM_MESSAGE_BYTES)).copy(buf, QUORUM_MESSAGE_BYTES);
  return buf;
}

export const DROP_REASONS = ["size", "crc", "cluster", "version", "padding", "type", "slot", "source", "auth"] as const;
export type DropReason = (typeof DROP_REASONS)[number];

export type Decoded = { readonly ok: true; readonly message: QuorumMessage } | { readonly ok: false; readonly reason: DropReason };

/**
 * Validates and decodes one datagram. `configured` holds the slots a message may come from (every
 * configured slot but our own); `key` is the cluster's quorum key, or null when it has no secret.
 * With a key the size and tag are checked first (constant-time), before any field is read.
 */
export function decodeQuorumMessage(bytes: Uint8Array, hash: bigint, configured: ReadonlySet<number>, key: Uint8Array | null = null): Decoded {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  if (key !== null) {
    if (buf.length !== QUORUM_TAGGED_MESSAGE_BYTES) return { ok: false, reason: "auth" };
    const expected = quorumTag(key, buf.subarray(0, QUORUM_MESSAGE_BYTES));
    if (!timingSafeEqual(expected, buf.subarray(QUORUM_MESSAGE_BYTES))) return { ok: false, reason: "auth" };
  } else {
    if (buf.length === QUORUM_TAGGED_MESSAGE_BYTES) return { ok: false, reason: "auth" };
    if (buf.length !== QUORUM_MESSAGE_BYTES) return { ok: false, reason: "size" };
  }
  if (buf.readUInt32LE(CRC_OFFSET) !== crc32c(buf.subarray(0, CRC_OFFSET))) return { ok: false, reason: "crc" };
  if (buf.readBigUInt64LE(0) !== hash) return { ok: false, reason: "cluster" };
  if (buf.readBigUInt64LE(8) !== (key === null ? VERSION_UNTAGGED : VERSION_TAGGED)) return { ok: false, reason: "version" };
  if (buf.readUInt16LE(26) !== 0) return { ok: false, reason: "padding" };
  const type = QUORUM_MESSAGE_TYPES[buf.readUInt8(24)];
  if (type === undefined) return { ok: false, reason: "type" };
  const from = buf.readUInt8(25);
  if (!configured.has(from)) return { ok: false, reason: "slot" };
  return { ok: true, message: { type, term: buf.readBigUInt64LE(16), from } };
}

/** Why an "auth" drop happened, for the log line. */
function authDropWhy(length: number, keyed: boolean): string {
  if (!keyed) return "it is tagged, but this cluster has no secret (its sender was given one)";
  if (length === QUORUM_MESSAGE_BYTES) return "it is untagged (its sender has no secret)";
  if (length !== QUORUM_TAGGED_MESSAGE_BYTES) return `it is ${length} bytes, not ${QUORUM_TAGGED_MESSAGE_BYTES}`;
  return "its tag does not verify (another secret or cluster, or forged)";
}

// ---------------------------------------------------------------------------------------------------
// Source addresses

function parseIPv4(text: string): number[] | null {
  if (net.isIPv4(text)) return text.split(".").map(Number);
  return null;
}

/** The eight 16-bit groups of an IPv6 literal (no zone), or null. */
function parseIPv6(text: string): number[] | null {
  if (!net.isIPv6(text)) return null;
  let head = text;
  const tail: number[] = [];
  const v4 = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4 !== null) {
    const bytes = parseIPv4(v4[2]!);
    if (bytes === null) return null;
    head = v4[1]!.endsWith("::") ? v4[1]! : v4[1]!.slice(0, -1);
    tail.push((bytes[0]! << 8) | bytes[1]!, (bytes[2]! << 8) | bytes[3]!);
  }
  const groupsWanted = 8 - tail.length;
  const toGroups = (part: string): number[] => (part === "" ? [] : part.split(":").map((g) => parseInt(g, 16)));
  let groups: number[];
  const gap = head.indexOf("::");
  if (gap >= 0) {
    const left = toGroups(head.slice(0, gap));
    const right = toGroups(head.slice(gap + 2));
    groups = [...left, ...new Array<number>(groupsWanted - left.length - right.length).fill(0), ...right];
  } else {
    groups = toGroups(head);
  }
  groups.push(...tail);
  return groups.length === 8 && groups.every((g) => Number.isInteger(g) && g >= 0 && g <= 0xffff) ? groups : null;
}

/**
 * The canonical text of an IP literal, so equal addresses compare equal: an IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d, as a dual-stack socket reports an IPv4 sender) becomes a.b.c.d; IPv6 is written as
 * RFC 5952 (lowercase, no leading zeros, the longest run of two or more zero groups as "::"); a zone
 * (%eth0) is kept. Anything else is returned unchanged.
 */
export function canonicalAddress(address: string): string {
  if (net.isIPv4(address)) return address;
  const percent = address.indexOf("%");
  const zone = percent >= 0 ? address.slice(percent) : "";
  const groups = parseIPv6(percent >= 0 ? address.slice(0, percent) : address);
  if (groups === null) return address;
  if (zone === "" && groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return [groups[6]! >> 8, groups[6]! & 0xff, groups[7]! >> 8, groups[7]! & 0xff].join(".");
  }
  let bestAt = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestAt = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  const text =
    bestAt < 0 ? hex.join(":") : `${hex.slice(0, bestAt).join(":")}::${hex.slice(bestAt + bestLength).join(":")}`;
  return text + zone;
}

function isWildcard(address: string): boolean {
  const canonical = canonicalAddress(address);
  return canonical === "0.0.0.0" || canonical === "::";
}

/** Where a slot's datagrams may come from: any of `addresses` (canonical), from `port`. */
export interface SlotSource {
  readonly addresses: ReadonlySet<string>;
  readonly port: number;
}

/** Whether a datagram from `address`:`port` may speak for the slot whose source is `expected`. */
export function sourceMatches(expected: SlotSource | undefined, address: string, port: number): boolean {
  return expected !== undefined && port === expected.port && expected.addresses.has(canonicalAddress(address));
}

/** A slot's accepted sources: every address its host names, or this machine's if it is a wildcard. */
async function slotSource(host: string, port: number): Promise<SlotSource> {
  const literal = net.isIP(host);
  const found = literal !== 0 ? [host] : (await lookup(host, { all: true })).map((a) => a.address);
  const addresses = new Set(found.map(canonicalAddress));
  if (found.some(isWildcard)) {
    for (const list of Object.values(networkInterfaces())) {
      for (const info of list ?? []) addresses.add(canonicalAddress(info.scopeid ? `${info.address}%${info.scopeid}` : info.address));
    }
  }
  return { addresses, port };
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
  /**
   * The cluster's quorum key (io/keys.ts `deriveKey(secret, clusterId, "keylock quorum v1")`) when it
   * was formatted with a secret: datagrams are then tagged and must verify. Null or absent: no secret.
   */
  readonly key?: Uint8Array | null;
  /** Where sockets are bound (io/world.ts); node:dgram unless simulated. */
  readonly datagrams?: Datagrams;
  /** Timers (the close flush bound); the real clock unless simulated. */
  readonly clock?: Clock;
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

/** The real datagram sockets: node:dgram, bound exclusively, peers sent to by IP literal (`literalLookup`). */
export const realDatagrams: Datagrams = {
  async bind(local, onMessage, onError) {
    const socket = dgram.createSocket({
      type: local.family === 6 ? "udp6" : "udp4",
      ipv6Only: local.family === 6,
      lookup: literalLookup,
    });
    await new Promise<void>((resolve, reject) => {
      socket.once("error", (error) => {
        socket.close(); // a socket that failed to bind must not keep its handle
        reject(error);
      });
      socket.bind({ address: local.address, port: local.port, exclusive: true }, () => {
        socket.removeAllListeners("error");
        resolve();
      });
    });
    socket.on("message", (bytes, from) => onMessage(bytes, { address: from.address, port: from.port }));
    socket.on("error", onError);
    return {
      send: (bytes, port, address, done) => socket.send(bytes, port, address, (error) => done(error ?? null)),
      close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
    };
  },
};

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
    private readonly socket: DatagramSocket,
    private readonly hash: bigint,
    private readonly key: Uint8Array | null,
    private readonly family: 4 | 6,
    private readonly peers: Map<number, Resolved>,
    private readonly log: Logger,
    private readonly clock: Clock,
  ) {}

  /** Binds our slot's address (failing if it is in use) and resolves every peer's address once. */
  static async open(options: QuorumSocketOptions): Promise<QuorumSocket> {
    const self = await resolveHost(options.self.host);
    const peers = new Map<number, Resolved>();
    const sources = new Map<number, SlotSource>();
    for (const peer of options.peers) {
      const resolved = await resolveHost(peer.host);
      peers.set(peer.slot, { slot: peer.slot, address: resolved.address, port: peer.port, family: resolved.family, failing: false });
      sources.set(peer.slot, await slotSource(peer.host, peer.port));
    }
    const hash = clusterHash(options.clusterId);
    const key = options.key ?? null;
    const configured = new Set(peers.keys());
    let quorum: QuorumSocket | null = null;
    const onMessage = (bytes: Uint8Array, from: DatagramSource): void => {
      if (quorum === null || quorum.closed) return;
      const decoded = decodeQuorumMessage(bytes, hash, configured, key);
      if (!decoded.ok) {
        const count = ++quorum.stats.dropped[decoded.reason];
        if (decoded.reason === "auth" && (count & (count - 1)) === 0) {
          options.log(
            `dropped a quorum datagram from ${formatAddress(from.address, from.port)} that failed authentication: ` +
              `${authDropWhy(bytes.length, key !== null)} (${count} auth drops so far)`,
          );
        }
        return;
      }
      const slot = decoded.message.from;
      if (!sourceMatches(sources.get(slot), from.address, from.port)) {
        const count = ++quorum.stats.dropped.source;
        if ((count & (count - 1)) === 0) {
          const peer = peers.get(slot)!;
          options.log(
            `dropped a quorum ${decoded.message.type} claiming slot ${slot} from ${formatAddress(from.address, from.port)}, ` +
              `which is not slot ${slot}'s address ${formatAddress(peer.address, peer.port)} (${count} source drops so far)`,
          );
        }
        return;
      }
      quorum.stats.received++;
      options.onMessage(decoded.message);
    };
    const socket = await (options.datagrams ?? realDatagrams).bind(
      { address: self.address, port: options.self.port, family: self.family },
      onMessage,
      (error) => options.log(`quorum socket error (carrying on): ${error.message}`),
    );
    quorum = new QuorumSocket(socket, hash, key, self.family, peers, options.log, options.clock ?? realClock);
    return quorum;
  }

  send(to: number, message: QuorumMessage): void {
    const peer = this.peers.get(to);
    if (peer === undefined || this.closed) return;
    this.sendTo(peer, encodeQuorumMessage(message, this.hash, this.key));
  }

  broadcast(message: QuorumMessage): void {
    if (this.closed || this.peers.size === 0) return;
    const datagram = encodeQuorumMessage(message, this.hash, this.key);
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
        const timer = this.clock.setTimeout(resolve, CLOSE_FLUSH_MS_MAX);
        this.drained = () => {
          this.clock.clearTimeout(timer);
          resolve();
        };
      });
    }
    await this.socket.close();
  }
}
