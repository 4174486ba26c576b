/**
 * Hostile peers for the fuzzer: cases drawn from (seed, case index) and run against a real target.
 *
 * A TCP case opens 1–3 hostile connections to the serving member; each follows one strategy built from
 * recorded real traffic (the `Corpus`) or synthesized raw frames:
 *   byte-mutate    bit flips, interesting bytes, inserts and deletes inside frames (length prefix kept right)
 *   field-mutate   header and payload fields set to edge values (seq/ack/id 0, 2^53-2, reused, huge;
 *                  modes and cmds out of range; keys over the limit; writeSeq near 2^64; flags flipped),
 *                  on one frame or "sticky" on every frame after the greeting
 *   replay         a recorded session (greeting included) twice, overlapping itself, late, or spliced
 *                  onto another session's greeting
 *   reorder        frames shuffled, duplicated with a fresh seq but the same request id
 *   truncate       the stream cut mid-frame, then closed or left open
 *   length         oversize, zero or lying length prefixes
 *   idle           many sockets that never greet
 *   flood          greet, then thousands of requests, never reading
 *   rogue-holder   greet, take the honest clients' key, answer the server's invalidations wrongly
 *                  (wrong modes, twice, never, huge writeSeq) or not at all
 *   server-frames  frames the server sent (responses, greeting answers) sent back to it
 *   garbage        random bytes
 * Greeting v2 needs the server's nonce, so a connection that should get past the greeting has a live
 * "greet" step (HELLO, then GREETING with proofs made on that connection) instead of recorded bytes; its
 * hostile variants rewrite the HELLO or GREETING it sends: a wrong identity proof, the proof or whole
 * GREETING replayed from a recorded session, a truncated or oversized nonce, oversized proof, claim and
 * name fields, a greeting for a recorded client's rid without its resumption secret, no claim at all.
 * Recorded sessions replayed as bytes (replay strategy) include their recorded greeting: refused.
 * A recover case (about 8% of `keylock up` cases) takes a write lock, restarts the server and answers its
 * LOCK_RECOVER request with a lying report (writeSeq near 2^64, bad modes, the honest clients' key).
 * A client case (about 10%) turns it around: a hostile server (recorded server frames, mutated; grants
 * that do not answer the request) against a fresh `connect()` client in this process.
 * A UDP case sends 1–6 forged 32-byte quorum datagrams from fresh random ports to the members:
 * configured `from` slots, edge terms (current + k, TERM_MAX, 2^63, 2^64-1, random), some with a
 * wrong CRC, cluster hash, version, size or type.
 *
 * Guarantees: a case is a pure function of (seed, index, corpus shape); recorded sessions differ between
 * runs only in the donors' rids and pids (which cases overwrite) and in values the server chose (a
 * cluster id, fencing tokens), so a replay sends the same frames. Running a case never throws for
 * anything the target does (sockets erroring or closing are expected), and every socket it opens is
 * closed when `run` resolves.
 * Relies on: wire.ts (raw frames), src/io/udp.ts (datagram layout and CRC), the codec's limits.
 */
import dgram from "node:dgram";
import net from "node:net";
import { Buffer } from "node:buffer";
import { setTimeout as sleep } from "node:timers/promises";
import { prng } from "../support/prng.js";
import { clusterHash, crc32c, QUORUM_MESSAGE_BYTES } from "../../src/io/udp.js";
import { TERM_MAX } from "../../src/core/limits.js";
import { KEY_BYTES_MAX } from "../../src/core/keys.js";
import { FRAME_BYTES_MAX } from "../../src/protocol/messages.js";
import { connect } from "../../src/index.js";
import { COUNTER_KEY } from "./honest.js";
import { GreetingExchange } from "../../src/client/handshake.js";
import { newIdentity } from "../../src/io/greeting-proofs.js";
import { decodeBody, encodeMessage } from "../../src/protocol/codec.js";
import type { Message } from "../../src/protocol/messages.js";
import { RawIdentity, rawGreet } from "../support/greet.js";
import { SAFE_MAX, U64_MAX, frameBytes, rawDecode, rawFrame, splitAddress, splitFrames, type RawBody } from "./wire.js";

// ---------------------------------------------------------------------------------------------------
// Randomness

export class Rand {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = prng(seed);
  }
  float(): number {
    return this.next();
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  u64(): bigint {
    return (BigInt(this.int(0x100000000)) << 32n) | BigInt(this.int(0x100000000));
  }
  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }
}

/** The PRNG seed of case `index` of run `seed` (both 32-bit). */
export function caseSeed(seed: number, index: number): number {
  let h = (seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

// ---------------------------------------------------------------------------------------------------
// Recorded traffic

export interface Corpus {
  /** Client→server sessions, greeting first (raw bodies). */
  readonly sessions: readonly (readonly Buffer[])[];
  /** Frames the server sent (greeting answers, invalidations, responses). */
  readonly serverFrames: readonly Buffer[];
  readonly clusterId: string;
}

function decoded(body: Buffer): RawBody {
  return rawDecode(body) ?? [1, 0, 1, 3, 0, 0, null];
}

function isGreeting(body: RawBody): boolean {
  return body[3] === 0 && body[4] === 0 && Array.isArray(body[6]);
}

function isHello(body: RawBody): boolean {
  return body[3] === 7 && body[4] === 0 && Array.isArray(body[6]);
}

/** A greet step for `rid`, optionally rewriting what it sends (hostile variants). */
function greetStep(rid: bigint, options: GreetStep["options"] = {}, rewrites: { hello?: Rewrite[]; greeting?: Rewrite[]; note?: string } = {}): GreetStep {
  return { kind: "greet", rid, options, hello: rewrites.hello ?? [], greeting: rewrites.greeting ?? [], note: rewrites.note ?? "" };
}

/**
 * A recorded session as steps: its recorded HELLO and GREETING become a live greet step for `rid`
 * (greeting rewrites apply to the live GREETING), the rest is sent as recorded.
 */
function sessionSteps(bodies: readonly Buffer[], rid: bigint, rand: Rand, rewrites: { hello?: Rewrite[]; greeting?: Rewrite[] } = {}): Step[] {
  const first = bodies[0] === undefined ? null : rawDecode(bodies[0]);
  const second = bodies[1] === undefined ? null : rawDecode(bodies[1]);
  if (first === null || second === null || !isHello(first) || !isGreeting(second)) return sends(bodies, rand);
  const payload = second[6] as unknown[];
  const options = { lastServerTerm: 0n, farewell: (Number(payload[4]) & 1) !== 0, admin: (Number(payload[4]) & 2) !== 0 };
  return [greetStep(rid, options, rewrites), ...sends(bodies.slice(2), rand)];
}

/** The GREETING of a recorded session (raw), if any. */
function recordedGreeting(corpus: Corpus, rand: Rand): RawBody | null {
  const session = rand.pick(corpus.sessions);
  const body = session[1] === undefined ? null : rawDecode(session[1]);
  return body !== null && isGreeting(body) ? body : null;
}

/** Hostile rewrites of a live greeting (docs/protocol.md §6.1): each must be refused or harmless. */
function greetingAttack(rand: Rand, corpus: Corpus): { note: string; hello?: Rewrite[]; greeting?: Rewrite[]; rid?: bigint } {
  const recorded = recordedGreeting(corpus, rand);
  switch (rand.int(8)) {
    case 0:
      return { note: "wrong identity proof", greeting: [(b) => setPayload(b, 9, rand.bytes(64))] };
    case 1:
      return recorded === null
        ? { note: "no claim", greeting: [(b) => setPayload(setPayload(b, 8, new Uint8Array(0)), 9, new Uint8Array(0))] }
        : { note: "identity proof and claim replayed from a recorded greeting", greeting: [(b) => setPayload(setPayload(b, 8, (recorded[6] as unknown[])[8]), 9, (recorded[6] as unknown[])[9])] };
    case 2:
      return recorded === null ? { note: "wrong cluster proof", greeting: [(b) => setPayload(b, 7, rand.bytes(32))] } : { note: "a recorded GREETING replayed whole", greeting: [() => recorded] };
    case 3: {
      const size = rand.pick([0, 1, 31, 33, 64, 4096]);
      return { note: `HELLO nonce of ${size} bytes`, hello: [(b) => setPayload(b, 1, rand.bytes(size))] };
    }
    case 4: {
      const which = rand.pick([7, 8, 9]);
      const size = rand.pick([1, 31, 33, 65, 1000]);
      return { note: `greeting field ${which} of ${size} bytes`, greeting: [(b) => setPayload(b, which, rand.bytes(size))] };
    }
    case 5: {
      const rid = recorded === null ? 1n : BigInt((recorded[6] as unknown[])[2] as bigint | number);
      return { note: "a recorded client's rid without its resumption secret", rid, greeting: [(b) => setPayload(b, 3, rand.pick([0n, 1n, 2n, 5n]))] };
    }
    case 6:
      return { note: "wrong cluster proof", greeting: [(b) => setPayload(b, 7, rand.bytes(32))] };
    default:
      return { note: "greeting payload with a trailing field", greeting: [(b) => setPayload(b, 10, rand.bytes(8))] };
  }
}

function lockRequest(seq: number, ack: number, id: number, key: string, oldMode: number, newMode: number, noQueue = false): RawBody {
  return [seq, ack, id, 1, 0, 0, [Buffer.from(key, "latin1"), oldMode, newMode, 0, noQueue]];
}

/** Rewrites a session's greeting rid and pid (recorded ones vary between runs; a case must not depend on them). */
function withRid(session: readonly Buffer[], rid: bigint): Buffer[] {
  return session.map((body, i) => {
    if (i > 1) return body;
    const raw = rawDecode(body);
    if (raw === null || !isGreeting(raw)) return body;
    const payload = [...(raw[6] as unknown[])];
    payload[2] = rid;
    payload[6] = 4242;
    return Buffer.from(rawFrame([...raw.slice(0, 6), payload]).subarray(4));
  });
}

// ---------------------------------------------------------------------------------------------------
// Cases

type Rewrite = (body: RawBody) => RawBody;

interface GreetStep {
  readonly kind: "greet";
  readonly rid: bigint;
  readonly options: { readonly lastServerTerm?: bigint; readonly farewell?: boolean; readonly admin?: boolean; readonly pid?: number };
  readonly hello: readonly Rewrite[];
  readonly greeting: readonly Rewrite[];
  readonly note: string;
}

type Step =
  | GreetStep
  | { readonly kind: "send"; readonly bytes: Buffer }
  | { readonly kind: "wait"; readonly ms: number }
  | { readonly kind: "close" };

interface HostileConnection {
  readonly strategy: string;
  readonly detail: string;
  readonly steps: Step[];
  /** false: never read (the socket is paused), so the server's writes back up. */
  readonly read: boolean;
  /** Answer the server's requests (invalidations, recover requests): how. */
  readonly answer: "no" | "correct" | "mutated" | "twice" | "never";
  /** Open this many sockets that never send anything (instead of the steps). */
  readonly idle?: number;
}

export interface TcpCase {
  readonly kind: "tcp";
  readonly connections: HostileConnection[];
  readonly durationMs: number;
}

export interface Datagram {
  readonly slot: number;
  readonly bytes: Buffer;
  readonly detail: string;
}

export interface UdpCase {
  readonly kind: "udp";
  /** Built at run time against the current term (the case stores relative terms). */
  readonly build: (term: bigint, hash: bigint) => Datagram[];
  readonly summary: string;
  readonly durationMs: number;
  /** Afterwards, stop the leader and check that another member takes over. */
  readonly failover: boolean;
}

/**
 * A hostile client takes a write lock, the server restarts, and the client's recovery report lies:
 * writeSeq near 2^64, modes out of range, the honest clients' key (issue item 4: a report must not
 * raise the fencing high-water mark past what the store can reserve, nor conflict with honest locks).
 */
export interface RecoverCase {
  readonly kind: "recover";
  readonly reports: { key: "own" | "honest" | "other"; mode: number; writeSeq: "granted" | "granted+1" | bigint }[];
  readonly twice: boolean;
  readonly durationMs: number;
}

/**
 * A hostile server against a fresh `connect()` client in this process: it greets correctly, then sends
 * mutated copies of recorded server frames (answers to requests never made, invalidations of keys not
 * held, recover requests, out-of-window seqs) and answers the client's lock request wrongly. The client
 * may fail its calls; it must not throw uncaught (issue item 2, client side).
 */
export interface ClientCase {
  readonly kind: "client";
  readonly frames: { template: number; mutations: number[] }[];
  readonly answer: "correct" | "mutated" | "never" | "twice";
  readonly mutationSeed: number;
  readonly durationMs: number;
}

export type Case = TcpCase | UdpCase | RecoverCase | ClientCase;

/** Share of `keylock up` cases that attack a client instead (they need no restart, only a socket). */
const CLIENT_SHARE = 0.1;

/** Share of TCP cases that restart the server to attack recovery (each costs a restart). */
const RECOVER_SHARE = 0.08;

export function upCase(rand: Rand, corpus: Corpus): TcpCase | RecoverCase | ClientCase {
  const draw = rand.float();
  if (draw < CLIENT_SHARE) {
    const frames = Array.from({ length: rand.range(1, 6) }, () => ({
      template: rand.int(Math.max(1, corpus.serverFrames.length)),
      mutations: Array.from({ length: rand.range(0, 2) }, () => rand.int(1000)),
    }));
    return { kind: "client", frames, answer: rand.pick(["correct", "mutated", "never", "twice"] as const), mutationSeed: rand.int(0x7fffffff), durationMs: rand.range(300, 1000) };
  }
  if (draw >= CLIENT_SHARE + RECOVER_SHARE) return tcpCase(rand, corpus);
  const reports = Array.from({ length: rand.range(1, 3) }, () => ({
    key: rand.pick(["own", "own", "honest", "other"] as const),
    mode: rand.chance(0.85) ? rand.pick([2, 3, 1]) : rand.pick([0, 4, 255]),
    writeSeq: rand.chance(0.7) ? rand.pick(WRITE_SEQ_VALUES) : rand.pick(["granted", "granted+1"] as const),
  }));
  return { kind: "recover", reports, twice: rand.chance(0.2), durationMs: rand.range(500, 1500) };
}

export function describeCase(c: Case): string {
  if (c.kind === "udp") return `udp: ${c.summary}`;
  if (c.kind === "client") {
    return `client: a hostile server sends ${c.frames.length} recorded frame(s) with ${c.frames.reduce((n, f) => n + f.mutations.length, 0)} field mutation(s), answers the lock request ${c.answer}`;
  }
  if (c.kind === "recover") {
    const reports = c.reports.map((r) => `${r.key} key mode ${r.mode} writeSeq ${String(r.writeSeq)}`).join(", ");
    return `recover: restart, then a recovery report of ${reports}${c.twice ? ", sent twice" : ""}`;
  }
  return `tcp: ${c.connections.map((h) => `${h.strategy}(${h.detail})`).join(" + ")}`;
}

/** Strategies, repeated by weight: field-aware mutations of real sessions find the most. */
const TCP_STRATEGIES = [
  ...Array<"field-mutate">(5).fill("field-mutate"),
  ...Array<"byte-mutate">(2).fill("byte-mutate"),
  ...Array<"reorder">(3).fill("reorder"),
  ...Array<"rogue-holder">(2).fill("rogue-holder"),
  "replay",
  "truncate",
  "length",
  "idle",
  "flood",
  "server-frames",
  "garbage",
  ...Array<"greeting-attack">(2).fill("greeting-attack"),
] as const;

export function tcpCase(rand: Rand, corpus: Corpus): TcpCase {
  const count = rand.chance(0.7) ? 1 : rand.range(2, 3);
  const connections: HostileConnection[] = [];
  for (let i = 0; i < count; i++) connections.push(connection(rand, corpus, rand.pick(TCP_STRATEGIES)));
  return { kind: "tcp", connections, durationMs: rand.range(200, 1200) };
}

function sends(bodies: readonly Buffer[], rand: Rand, gapMs = 0): Step[] {
  const steps: Step[] = [];
  for (const body of bodies) {
    steps.push({ kind: "send", bytes: frameBytes(body) });
    if (gapMs > 0 || rand.chance(0.1)) steps.push({ kind: "wait", ms: gapMs || rand.range(1, 30) });
  }
  return steps;
}

function hostileRid(rand: Rand): bigint {
  const r = rand.float();
  if (r < 0.05) return 0n;
  if (r < 0.1) return U64_MAX;
  return rand.u64() | 1n;
}

function pickSession(rand: Rand, corpus: Corpus): Buffer[] {
  const index = rand.int(corpus.sessions.length);
  const session = withRid(corpus.sessions[index]!, hostileRid(rand));
  if (process.env.KEYLOCK_FUZZ_VERBOSE) console.log(`[fuzz] session ${index} of ${corpus.sessions.length}`);
  return session;
}

function connection(rand: Rand, corpus: Corpus, strategy: (typeof TCP_STRATEGIES)[number]): HostileConnection {
  const base = { strategy, read: rand.chance(0.85), answer: "no" as const };
  switch (strategy) {
    case "byte-mutate": {
      const session = pickSession(rand, corpus);
      const mutations = rand.range(1, 8);
      const keepGreeting = rand.chance(0.7) && session.length > 2;
      const notes: string[] = [];
      for (let m = 0; m < mutations; m++) {
        const at = keepGreeting ? rand.range(2, session.length - 1) : rand.int(session.length);
        const [mutated, note] = mutateBytes(rand, session[at]!);
        session[at] = mutated;
        notes.push(`#${at} ${note}`);
      }
      // With the greeting kept it is greeted live; a mutated greeting goes as bytes (refused or not).
      const steps = keepGreeting ? sessionSteps(session, hostileRid(rand), rand) : sends(session, rand);
      return { ...base, detail: notes.join(", "), steps: [...steps, ...tail(rand)] };
    }
    case "field-mutate": {
      const session = pickSession(rand, corpus).map(decoded);
      const notes: string[] = [];
      const mutations = rand.pick([1, 1, 1, 2, 2, 3]);
      // The first two frames are HELLO and GREETING, sent live: their mutations rewrite the live frames.
      const hello: Rewrite[] = [];
      const greet: Rewrite[] = [];
      for (let m = 0; m < mutations; m++) {
        const mutation = fieldMutation(rand, session);
        const sticky = rand.chance(mutation.sticky ?? 0.4);
        if (sticky) {
          for (let i = 2; i < session.length; i++) session[i] = mutation.apply(session[i]!, i);
          notes.push(`every frame: ${mutation.note}`);
        } else {
          const at = rand.chance(0.8) && session.length > 2 ? rand.range(2, session.length - 1) : rand.int(2);
          if (at === 0) hello.push((b) => mutation.apply(b, 0));
          else if (at === 1) greet.push((b) => mutation.apply(b, 1));
          else session[at] = mutation.apply(session[at]!, at);
          notes.push(`#${at}: ${mutation.note}`);
        }
      }
      const bodies = session.map((b) => Buffer.from(rawFrame(b).subarray(4)));
      return { ...base, detail: notes.join(", "), steps: [...sessionSteps(bodies, hostileRid(rand), rand, { hello, greeting: greet }), ...tail(rand)] };
    }
    case "replay": {
      const session = pickSession(rand, corpus);
      const how = rand.pick(["twice", "late", "overlapping", "spliced"] as const);
      if (how === "twice") return { ...base, detail: how, steps: [...sends(session, rand), ...sends(session, rand), ...tail(rand)] };
      if (how === "late") return { ...base, detail: how, steps: [{ kind: "wait", ms: rand.range(100, 600) }, ...sends(session, rand), ...tail(rand)] };
      if (how === "spliced") {
        const other = rand.pick(corpus.sessions);
        // Greeted live, then another session's frames; the plain replays above send recorded greetings (refused).
        return { ...base, detail: how, steps: [greetStep(hostileRid(rand)), ...sends(other.slice(2), rand), ...tail(rand)] };
      }
      // overlapping: the first half, then the whole session again from its greeting, on one connection.
      return { ...base, detail: how, steps: [...sends(session.slice(0, Math.ceil(session.length / 2)), rand), ...sends(session, rand), ...tail(rand)] };
    }
    case "reorder": {
      const session = pickSession(rand, corpus).map(decoded);
      const [hello, greet, ...rest] = session;
      const notes: string[] = [];
      if (rand.chance(0.4)) {
        shuffle(rand, rest);
        notes.push("shuffled");
      }
      if (rand.chance(0.7) && rest.length > 0) {
        // A request repeated with its id (right after it, or later): the id is used twice (issue item 2).
        // The last frame is usually the farewell: weight it (two FAREWELLs with one id).
        const at = rand.chance(0.4) ? rest.length - 1 : rand.int(rest.length);
        const to = rand.chance(0.7) ? at + 1 : rand.int(rest.length + 1);
        rest.splice(to, 0, [...rest[at]!]);
        notes.push(`frame ${at + 1} (cmd ${String(rest[at]![3])}) repeated at ${to + 1} with its id`);
      }
      if (rand.chance(0.7)) {
        // Consecutive seqs, so the reordered or repeated frames are not simply dropped as duplicates.
        rest.forEach((body, i) => (rest[i] = [i + 1, ...body.slice(1)]));
        notes.push("seqs renumbered");
      }
      const toBytes = (frames: RawBody[]): Buffer[] => frames.map((b) => Buffer.from(rawFrame(b).subarray(4)));
      const steps = rand.chance(0.85)
        ? sessionSteps(toBytes([hello!, greet!, ...rest].filter((b) => b !== undefined)), hostileRid(rand), rand)
        : sends(toBytes(shuffle(rand, [hello!, greet!, ...rest].filter((b) => b !== undefined))), rand);
      return { ...base, detail: notes.join(", ") || "as recorded", steps: [...steps, ...tail(rand)] };
    }
    case "truncate": {
      const session = pickSession(rand, corpus);
      const stream = Buffer.concat(session.map(frameBytes));
      const cut = rand.range(1, Math.max(1, stream.length - 1));
      const close = rand.chance(0.5);
      return {
        ...base,
        detail: `cut at byte ${cut} of ${stream.length}, then ${close ? "close" : "stay open"}`,
        steps: [{ kind: "send", bytes: stream.subarray(0, cut) }, ...(close ? [{ kind: "close" } as Step] : [])],
      };
    }
    case "length": {
      const lengths = [FRAME_BYTES_MAX + 1, 0xffffffff, 0x80000000, 0, FRAME_BYTES_MAX, 1, 5000];
      const length = rand.pick(lengths);
      const greet = rand.chance(0.5);
      const prefix = Buffer.alloc(4);
      prefix.writeUInt32BE(length >>> 0, 0);
      const partial = rand.bytes(rand.range(0, 64));
      const steps: Step[] = greet ? [greetStep(hostileRid(rand))] : [];
      steps.push({ kind: "send", bytes: Buffer.concat([prefix, partial]) });
      return { ...base, detail: `${greet ? "after a greeting, " : ""}length ${length} then ${partial.length} bytes`, steps };
    }
    case "idle": {
      const sockets = rand.range(10, 120);
      return { ...base, detail: `${sockets} sockets that never greet`, steps: [], read: false, idle: sockets };
    }
    case "flood": {
      const requests = rand.range(200, 4000);
      const rid = hostileRid(rand);
      const bodies: RawBody[] = [];
      const sameKey = rand.chance(0.3);
      for (let i = 0; i < requests; i++) {
        const key = sameKey ? COUNTER_KEY : `fuzz-flood-${i % 997}`;
        bodies.push(lockRequest(i + 1, rand.chance(0.9) ? 1 : 0, i + 2, key, 0, rand.pick([1, 2, 3]), rand.chance(0.2)));
      }
      const bytes = Buffer.concat(bodies.map((b) => rawFrame(b)));
      return { ...base, read: false, detail: `${requests} requests${sameKey ? " on the honest key" : ""}, never reading`, steps: [greetStep(rid), { kind: "send", bytes }] };
    }
    case "rogue-holder": {
      const answer = rand.pick(["correct", "mutated", "twice", "never"] as const);
      const mode = rand.pick([2, 3, 1]);
      const steps: Step[] = [
        greetStep(hostileRid(rand), { pid: rand.pick([0, 1, process.pid, 4194304]) }),
        { kind: "send", bytes: rawFrame(lockRequest(1, 1, 2, COUNTER_KEY, 0, mode)) },
      ];
      return { ...base, read: true, answer, detail: `mode ${mode}, answers ${answer}`, steps };
    }
    case "server-frames": {
      const frames: Buffer[] = [];
      const n = rand.range(1, 6);
      for (let i = 0; i < n && corpus.serverFrames.length > 0; i++) frames.push(rand.pick(corpus.serverFrames));
      const greet = rand.chance(0.6);
      return { ...base, detail: `${greet ? "greeted, then " : ""}${frames.length} server frames`, steps: [...(greet ? [greetStep(hostileRid(rand))] : []), ...sends(frames, rand), ...tail(rand)] };
    }
    case "greeting-attack": {
      const attack = greetingAttack(rand, corpus);
      const rid = attack.rid ?? hostileRid(rand);
      const steps: Step[] = [greetStep(rid, { lastServerTerm: rand.chance(0.7) ? 0n : rand.pick([1n, 2n, 5n]) }, attack)];
      // Whatever the answer, try to use the connection as a greeted client would.
      if (rand.chance(0.6)) steps.push({ kind: "send", bytes: rawFrame(lockRequest(1, 1, 3, COUNTER_KEY, 0, rand.pick([1, 2]))) });
      return { ...base, detail: attack.note, steps: [...steps, ...tail(rand)] };
    }
    case "garbage": {
      const bytes = rand.bytes(rand.range(1, 2048));
      return { ...base, detail: `${bytes.length} random bytes`, steps: [{ kind: "send", bytes }, ...tail(rand)] };
    }
  }
}

function tail(rand: Rand): Step[] {
  const r = rand.float();
  if (r < 0.3) return [{ kind: "close" }];
  if (r < 0.5) return [{ kind: "wait", ms: rand.range(0, 300) }, { kind: "close" }];
  return [];
}

function shuffle<T>(rand: Rand, items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = rand.int(i + 1);
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

const INTERESTING_BYTES = [0x00, 0xff, 0x7f, 0x80, 0xc0, 0xc1, 0xcf, 0xd3, 0xdc, 0xdd, 0xde, 0xdf, 0xc4, 0xc6, 0x01, 0x07];

function mutateBytes(rand: Rand, body: Buffer): [Buffer, string] {
  const out = Buffer.from(body);
  if (out.length === 0) return [Buffer.from([rand.int(256)]), "empty body given one byte"];
  const at = rand.int(out.length);
  switch (rand.int(5)) {
    case 0:
      out[at] = out[at]! ^ (1 << rand.int(8));
      return [out, `bit flip at ${at}`];
    case 1: {
      const value = rand.pick(INTERESTING_BYTES);
      out[at] = value;
      return [out, `byte ${at} = 0x${value.toString(16)}`];
    }
    case 2:
      return [Buffer.concat([out.subarray(0, at), Buffer.from([rand.pick(INTERESTING_BYTES)]), out.subarray(at)]), `insert at ${at}`];
    case 3:
      return [Buffer.concat([out.subarray(0, at), out.subarray(at + 1)]), `delete at ${at}`];
    default: {
      const length = rand.range(1, Math.min(16, out.length - at));
      return [Buffer.concat([out, out.subarray(at, at + length)]), `append ${length} bytes from ${at}`];
    }
  }
}

interface FieldMutation {
  readonly note: string;
  /** How likely this mutation goes on every frame after the greeting rather than on one (default 0.4). */
  readonly sticky?: number;
  apply(body: RawBody, index: number): RawBody;
}

const HEADER_VALUES: readonly (number | bigint)[] = [0, 1, 2, 1000, SAFE_MAX - 2, SAFE_MAX - 1, SAFE_MAX - 1, SAFE_MAX - 1, SAFE_MAX, SAFE_MAX + 1, 2 ** 32, -1, U64_MAX, 2n ** 63n];
const MODE_VALUES = [0, 1, 2, 3, 4, 255, -1];
const WRITE_SEQ_VALUES = [0n, 1n, TERM_MAX, TERM_MAX + 1n, 2n ** 63n, U64_MAX - 1n, U64_MAX];

function setPayload(body: RawBody, index: number, value: unknown): RawBody {
  const payload = Array.isArray(body[6]) ? [...(body[6] as unknown[])] : [];
  payload[index] = value;
  return [...body.slice(0, 6), payload];
}

function fieldMutation(rand: Rand, session: readonly RawBody[]): FieldMutation {
  const kind = rand.int(17);
  const header = (field: number, name: string, value: unknown): FieldMutation => ({
    note: `${name} = ${String(value)}`,
    apply: (body) => {
      const out = [...body];
      out[field] = value;
      return out;
    },
  });
  switch (kind) {
    case 0:
    case 1:
    case 14:
      // ack claims more than we sent (issue item 1); it matters on every frame, so mostly sticky
      return { ...header(1, "ack", rand.pick(HEADER_VALUES)), sticky: 0.7 };
    case 2:
      return header(0, "seq", rand.pick(HEADER_VALUES));
    case 3:
    case 15:
    case 16: {
      // Request id reused: every frame gets the id of an earlier frame (issue item 2).
      const reused = session.length > 1 ? (session[rand.range(1, session.length - 1)]![2] ?? 2) : 2;
      return rand.chance(0.5) ? header(2, "id (reused)", reused) : header(2, "id", rand.pick(HEADER_VALUES));
    }
    case 4:
      return header(3, "cmd", rand.pick([0, 1, 2, 3, 4, 5, 6, 7, 8, 255, -1]));
    case 5:
      return header(4, "flags", rand.pick([0, 1, 2, 3, 255]));
    case 6:
      return header(5, "error", rand.pick([0, 1, 2, 3, 4, 5, 6, 7, 8]));
    case 7:
      return { note: "oldMode/newMode edge", apply: (b) => setPayload(setPayload(b, 1, rand.pick(MODE_VALUES)), 2, rand.pick(MODE_VALUES)) };
    case 8: {
      const length = rand.pick([0, KEY_BYTES_MAX, KEY_BYTES_MAX + 1, 4096]);
      const key = rand.chance(0.5) ? Buffer.from(COUNTER_KEY) : Buffer.alloc(length, 0x61);
      return { note: `key of ${key.length} bytes`, apply: (b) => setPayload(b, 0, key) };
    }
    case 9: {
      const value = rand.pick(WRITE_SEQ_VALUES);
      return { note: `writeSeq = ${value}`, apply: (b) => setPayload(b, 3, value) };
    }
    case 10:
      return { note: "response flag flipped", apply: (b) => [...b.slice(0, 4), b[4] === 1 ? 0 : 1, ...b.slice(5)] };
    case 11: {
      const which = rand.pick(["rid", "lastServerTerm", "flags", "name", "pid", "proof", "version"] as const);
      const value: unknown = {
        rid: rand.pick([0n, U64_MAX, 1n]),
        lastServerTerm: rand.pick([U64_MAX, 2n ** 63n, TERM_MAX + 1n, 5n]),
        flags: rand.pick([1, 2, 3, 4, 255]),
        name: "n".repeat(rand.pick([257, 5000])),
        pid: rand.pick([0, 1, 2 ** 32 - 1, 2 ** 32]),
        proof: new Uint8Array(rand.pick([32, 65])),
        version: rand.pick([0, 2, 2 ** 32]),
      }[which];
      const index = { rid: 2, lastServerTerm: 3, flags: 4, name: 5, pid: 6, proof: 7, version: 1 }[which];
      return { note: `greeting ${which} edge`, apply: (b, i) => (i === 1 ? setPayload(b, index, value) : b) };
    }
    case 12:
      return { note: "payload replaced", apply: (b) => [...b.slice(0, 6), rand.pick([null, 0, [], [[]], "x", new Uint8Array(3), { a: 1 }])] };
    default:
      return { note: "header truncated or extended", apply: (b) => (rand.chance(0.5) ? b.slice(0, rand.int(7)) : [...b, 0]) };
  }
}

// ---------------------------------------------------------------------------------------------------
// Forged quorum datagrams

const QUORUM_TYPES = 4;

export function udpCase(rand: Rand, slots: number): UdpCase {
  const count = rand.range(1, 6);
  const specs = Array.from({ length: count }, () => ({
    slot: rand.int(slots),
    type: rand.chance(0.9) ? rand.int(QUORUM_TYPES) : rand.pick([4, 255]),
    from: rand.chance(0.85) ? rand.int(slots) : rand.pick([slots, 14, 255]),
    term: rand.pick(["+1", "+2", "+1000", "+2^20", "+2^21", "TERM_MAX", "TERM_MAX+1", "2^63", "2^64-2", "2^64-1", "0", "random"] as const),
    random: rand.u64(),
    corrupt: rand.chance(0.8) ? "none" : rand.pick(["crc", "hash", "version", "padding", "size"] as const),
  }));
  const failover = rand.chance(0.5);
  const summary =
    specs.map((s) => `type ${s.type} from ${s.from} term ${s.term}${s.corrupt === "none" ? "" : ` bad ${s.corrupt}`} → slot ${s.slot}`).join("; ") +
    (failover ? "; then a failover" : "");
  return {
    kind: "udp",
    summary,
    failover,
    durationMs: rand.range(300, 800),
    build: (term, hash) =>
      specs.map((s) => {
        const value = {
          "+1": term + 1n,
          "+2": term + 2n,
          "+1000": term + 1000n,
          "+2^20": term + (1n << 20n),
          "+2^21": term + (1n << 21n),
          TERM_MAX,
          "TERM_MAX+1": TERM_MAX + 1n,
          "2^63": 1n << 63n,
          "2^64-2": U64_MAX - 1n,
          "2^64-1": U64_MAX,
          "0": 0n,
          random: s.random,
        }[s.term];
        const buf = Buffer.alloc(QUORUM_MESSAGE_BYTES);
        buf.writeBigUInt64LE(s.corrupt === "hash" ? hash ^ 1n : hash, 0);
        buf.writeBigUInt64LE(s.corrupt === "version" ? 1n : 0n, 8);
        buf.writeBigUInt64LE(value & U64_MAX, 16);
        buf.writeUInt8(s.type, 24);
        buf.writeUInt8(s.from, 25);
        if (s.corrupt === "padding") buf.writeUInt16LE(1, 26);
        buf.writeUInt32LE(crc32c(buf.subarray(0, 28)), 28);
        if (s.corrupt === "crc") buf.writeUInt32LE((buf.readUInt32LE(28) ^ 1) >>> 0, 28);
        const bytes = s.corrupt === "size" ? buf.subarray(0, 31) : buf;
        return { slot: s.slot, bytes, detail: `term ${value}` };
      }),
  };
}

export { clusterHash };

// ---------------------------------------------------------------------------------------------------
// Running a case

/** How long after the greeting deadline a never-greeting socket may still be open. */
const GREETING_DEADLINE_SLACK_MS = 2000;

/**
 * Runs a TCP case against `address`; resolves when every hostile socket is closed, with what the server
 * did wrong that only the hostile side can see (sockets that never greeted and were never closed).
 */
export async function runTcpCase(c: TcpCase, address: string, rand: Rand, greetingTimeoutMs: number): Promise<string[]> {
  const problems: string[] = [];
  const [host, port] = splitAddress(address);
  const sockets = new Set<net.Socket>();
  const open = (): net.Socket => {
    const socket = net.connect({ host, port });
    socket.on("error", () => undefined);
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    return socket;
  };
  const runs = c.connections.map(async (h) => {
    const idle = h.idle;
    if (idle !== undefined) {
      const mine = Array.from({ length: idle }, open);
      await sleep(greetingTimeoutMs + GREETING_DEADLINE_SLACK_MS);
      const stillOpen = mine.filter((s) => !s.destroyed && s.readyState === "open").length;
      if (stillOpen > 0) problems.push(`${stillOpen} of ${idle} connections that never greeted are still open ${greetingTimeoutMs + GREETING_DEADLINE_SLACK_MS} ms later (greeting deadline ${greetingTimeoutMs} ms)`);
      return;
    }
    const socket = open();
    await new Promise<void>((resolve) => {
      socket.once("connect", resolve);
      socket.once("close", resolve);
    });
    const greetingAnswers: Buffer[] = [];
    if (h.steps.some((step) => step.kind === "greet")) collectGreetingAnswers(socket, greetingAnswers);
    if (h.read) answerServer(socket, h, rand);
    else socket.pause();
    for (const step of h.steps) {
      if (socket.destroyed) return;
      if (process.env.KEYLOCK_FUZZ_VERBOSE && step.kind === "send") console.log(`[fuzz] ${h.strategy} sends ${showFrames(step.bytes)}`);
      if (step.kind === "wait") await sleep(step.ms);
      else if (step.kind === "greet") {
        socket.resume();
        await liveGreet(socket, step, greetingAnswers);
        if (!h.read) socket.pause();
      }
      else if (step.kind === "close") {
        socket.destroy();
        return;
      } else await new Promise<void>((resolve) => (socket.write(step.bytes, () => resolve()) ? resolve() : socket.once("drain", resolve)));
    }
  });
  await Promise.race([Promise.all(runs), sleep(c.durationMs + greetingTimeoutMs + GREETING_DEADLINE_SLACK_MS + 1000)]);
  await sleep(c.durationMs);
  for (const socket of sockets) socket.destroy();
  return problems;
}

/** Keeps the server's greeting-phase answers (HELLO and GREETING responses) for `liveGreet`. */
function collectGreetingAnswers(socket: net.Socket, into: Buffer[]): void {
  let buffered = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 4 && buffered.length >= 4 + buffered.readUInt32BE(0)) {
      const length = buffered.readUInt32BE(0);
      const body = buffered.subarray(4, 4 + length);
      buffered = buffered.subarray(4 + length);
      const raw = rawDecode(body);
      if (raw !== null && (raw[3] === 0 || raw[3] === 7) && raw[4] === 1) into.push(Buffer.from(body));
    }
  });
}

function toRaw(message: Message): RawBody {
  return rawDecode(Buffer.from(encodeMessage(message).subarray(4)))!;
}

/**
 * A live greeting (greeting v2) with the step's rewrites: HELLO, wait for its answer, GREETING with
 * proofs made on this connection, wait for its answer. Never throws; a refusal simply ends it.
 */
async function liveGreet(socket: net.Socket, step: GreetStep, answers: Buffer[]): Promise<void> {
  const exchange = new GreetingExchange("fuzz", {
    rid: step.rid === 0n || step.rid === U64_MAX ? 1n : step.rid,
    name: "fuzz-hostile",
    pid: step.options.pid ?? 0,
    lastServerTerm: step.options.lastServerTerm ?? 0n,
    farewell: step.options.farewell ?? false,
    admin: step.options.admin ?? false,
    secret: undefined,
    clusterId: "",
    resume: null,
    claim: newIdentity(),
  });
  const send = (raw: RawBody): Promise<void> =>
    new Promise((resolve) => (socket.write(rawFrame(raw), () => resolve()) ? resolve() : socket.once("drain", resolve)));
  const next = async (): Promise<Message | null> => {
    const body = await waitFor(socket, () => answers.shift(), 2000);
    if (body === undefined) return null;
    try {
      return decodeBody(body);
    } catch {
      return null;
    }
  };
  let hello = toRaw(exchange.hello());
  for (const rewrite of step.hello) hello = rewrite(hello);
  await send(hello);
  const helloAnswer = await next();
  if (helloAnswer === null || socket.destroyed) return;
  let greeting: RawBody;
  try {
    greeting = toRaw(exchange.greeting(helloAnswer));
  } catch {
    return; // refused at HELLO (the server's answer was an error)
  }
  if (step.rid === 0n || step.rid === U64_MAX) greeting = setPayload(greeting, 2, step.rid); // a reserved rid, refused by the codec
  for (const rewrite of step.greeting) greeting = rewrite(greeting);
  await send(greeting);
  await next();
}

/** Reads the server's frames and answers its requests the way the connection's strategy says. */
function answerServer(socket: net.Socket, h: HostileConnection, rand: Rand): void {
  let buffered = Buffer.alloc(0);
  let lastServerSeq = 0;
  let seq = 1000;
  socket.on("data", (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    for (;;) {
      if (buffered.length < 4) return;
      const length = buffered.readUInt32BE(0);
      if (buffered.length < 4 + length) return;
      const body = rawDecode(buffered.subarray(4, 4 + length));
      buffered = buffered.subarray(4 + length);
      if (body === null) continue;
      if (typeof body[0] === "number") lastServerSeq = body[0];
      if (h.answer === "no" || h.answer === "never" || body[4] !== 0) continue;
      const payload = body[6];
      let answer: unknown;
      if (body[3] === 1 && Array.isArray(payload)) {
        const [key, , newMode] = payload as [unknown, unknown, unknown];
        const mutated = h.answer === "mutated";
        answer = [key, mutated ? rand.pick(MODE_VALUES) : 2, mutated ? rand.pick(MODE_VALUES) : newMode, mutated ? rand.pick(WRITE_SEQ_VALUES) : 0n, false];
      } else if (body[3] === 2) {
        answer = [[Buffer.from(COUNTER_KEY), 2, h.answer === "mutated" ? rand.pick(WRITE_SEQ_VALUES) : 1n]];
      } else continue;
      const times = h.answer === "twice" ? 2 : 1;
      for (let i = 0; i < times; i++) {
        socket.write(rawFrame([++seq, lastServerSeq, body[2], body[3], 1, 0, answer]));
      }
    }
  });
}

/** Sends forged datagrams, each from a fresh socket on a random port. */
export async function runUdpCase(datagrams: readonly Datagram[], quorum: readonly { slot: number; host: string; port: number }[]): Promise<void> {
  for (const d of datagrams) {
    const target = quorum[d.slot % quorum.length]!;
    const socket = dgram.createSocket(net.isIPv6(target.host) ? "udp6" : "udp4");
    socket.on("error", () => undefined);
    await new Promise<void>((resolve) => socket.send(d.bytes, target.port, target.host, () => resolve()));
    await new Promise<void>((resolve) => socket.close(() => resolve()));
    await sleep(5);
  }
}

/** The frames of a byte stream, decoded for a human (verbose runs). */
function showFrames(bytes: Buffer): string {
  const bodies = splitFrames(bytes);
  const shown = bodies.slice(0, 8).map((b) => JSON.stringify(rawDecode(b) ?? `<${b.length} bytes>`, (_k, v: unknown) => (typeof v === "bigint" ? `${v}n` : v)));
  return shown.join(" ") + (bodies.length > 8 ? ` … ${bodies.length} frames` : "") + (bodies.length === 0 ? `<${bytes.length} bytes, no whole frame>` : "");
}

/** Reads frames from a socket as raw bodies. */
function frameReader(socket: net.Socket, onBody: (body: RawBody) => void): void {
  let buffered = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 4 && buffered.length >= 4 + buffered.readUInt32BE(0)) {
      const length = buffered.readUInt32BE(0);
      const body = rawDecode(buffered.subarray(4, 4 + length));
      buffered = buffered.subarray(4 + length);
      if (body !== null) onBody(body);
    }
  });
}

function waitFor<T>(socket: net.Socket, probe: () => T | undefined, timeoutMs: number): Promise<T | undefined> {
  return new Promise((resolve) => {
    const started = Date.now();
    const tick = (): void => {
      const found = probe();
      if (found !== undefined || socket.destroyed || Date.now() - started > timeoutMs) resolve(found);
      else setTimeout(tick, 10);
    };
    tick();
  });
}

/** Greets live as `identity` on a recover-case socket (its frames are collected in `bodies`). */
async function greetRaw(conn: { socket: net.Socket; bodies: RawBody[] }, identity: RawIdentity, lastServerTerm: bigint): Promise<Message | null> {
  let taken = 0;
  const next = async (): Promise<Message> => {
    const found = await waitFor(conn.socket, () => {
      const index = conn.bodies.findIndex((b, i) => i >= taken && (b[3] === 0 || b[3] === 7) && b[4] === 1);
      if (index < 0) return undefined;
      taken = index + 1;
      return conn.bodies[index];
    }, 3000);
    if (found === undefined) throw new Error("no greeting answer");
    return decodeBody(Buffer.from(rawFrame(found).subarray(4)));
  };
  try {
    return await rawGreet((m) => conn.socket.write(encodeMessage(m)), next, identity, { lastServerTerm, name: "fuzz-recover" });
  } catch {
    return null;
  }
}

/** Runs a recover case: lock, restart (through `restart`), reconnect as the same client and lie in the report. */
export async function runRecoverCase(c: RecoverCase, address: string, corpus: Corpus, rand: Rand, restart: () => Promise<void>): Promise<void> {
  const [host, port] = splitAddress(address);
  const rid = rand.u64() | 1n;
  const key = `fuzz-recover-${rand.int(1_000_000)}`;
  const open = async (): Promise<{ socket: net.Socket; bodies: RawBody[] }> => {
    const socket = net.connect({ host, port });
    socket.on("error", () => undefined);
    const bodies: RawBody[] = [];
    frameReader(socket, (body) => bodies.push(body));
    await new Promise<void>((resolve) => {
      socket.once("connect", resolve);
      socket.once("close", resolve);
    });
    return { socket, bodies };
  };
  const first = await open();
  const identity = new RawIdentity(rid);
  const firstAnswer = await greetRaw(first, identity, 0n);
  first.socket.write(rawFrame(lockRequest(1, 0, 2, key, 0, 2)));
  const greetingAnswer = firstAnswer === null ? undefined : toRaw(firstAnswer);
  const grant = await waitFor(first.socket, () => first.bodies.find((b) => b[3] === 1 && b[4] === 1), 3000);
  const serverTerm = Array.isArray(greetingAnswer?.[6]) ? (greetingAnswer[6][2] as bigint | number) : 1;
  const granted = Array.isArray(grant?.[6]) ? BigInt(grant[6][3] as bigint | number) : 1n;
  first.socket.destroy();
  await restart();
  const second = await open();
  await greetRaw(second, identity, BigInt(serverTerm));
  let seq = 0;
  let sent = 0;
  const report = (): unknown[] =>
    c.reports
      .map((r) => [
        Buffer.from(r.key === "own" ? key : r.key === "honest" ? COUNTER_KEY : `fuzz-recover-other-${rand.int(1000)}`, "latin1"),
        r.mode,
        r.writeSeq === "granted" ? granted : r.writeSeq === "granted+1" ? granted + 1n : r.writeSeq,
      ])
      .sort((a, b) => Buffer.compare(a[0] as Buffer, b[0] as Buffer))
      .filter((entry, i, all) => i === 0 || !(entry[0] as Buffer).equals(all[i - 1]![0] as Buffer)); // keys strictly ascending
  const answered = new Set<unknown>();
  const deadline = Date.now() + c.durationMs + 2000;
  while (!second.socket.destroyed && Date.now() < deadline) {
    for (const body of second.bodies) {
      if (body[3] !== 2 || body[4] !== 0 || answered.has(body[2])) continue;
      answered.add(body[2]);
      const ack = typeof body[0] === "number" ? body[0] : 0;
      // First request: the lying report; later ones (after the last key): done (an empty batch).
      const locks = sent === 0 ? report() : [];
      for (let i = 0; i < (c.twice && sent === 0 ? 2 : 1); i++) second.socket.write(rawFrame([++seq, ack, body[2], 2, 1, 0, locks]));
      sent++;
    }
    await sleep(20);
  }
  await sleep(c.durationMs);
  if (process.env.KEYLOCK_FUZZ_VERBOSE) {
    const show = (b: RawBody): string => JSON.stringify(b, (_k, v: unknown) => (typeof v === "bigint" ? `${v}n` : v));
    console.log(`[fuzz] recover: before the restart got ${first.bodies.map(show).join(" ")}; after it ${second.bodies.map(show).join(" ")}`);
  }
  second.socket.destroy();
}

/**
 * Runs a client case; returns what went wrong in this process (uncaught exceptions, unhandled
 * rejections while the hostile server talked to the client).
 */
export async function runClientCase(c: ClientCase, corpus: Corpus): Promise<string[]> {
  const problems: string[] = [];
  const onUncaught = (error: Error): void => void problems.push(`uncaught in the client's process: ${(error.stack ?? String(error)).split("\n").slice(0, 4).join(" / ")}`);
  const onRejection = (reason: unknown): void => void problems.push(`unhandled rejection in the client's process: ${String(reason)}`);
  process.on("uncaughtException", onUncaught);
  process.on("unhandledRejection", onRejection);
  const rand = new Rand(c.mutationSeed);
  const templates = corpus.serverFrames.map(decoded).filter((b) => b[3] !== 0 && b[3] !== 7);
  const sockets = new Set<net.Socket>();
  let framesSent = false;
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => undefined);
    let seq = 0;
    let lastClientSeq = 0;
    frameReader(socket, (body) => {
      if (typeof body[0] === "number" && body[3] !== 0 && body[3] !== 7) lastClientSeq = body[0];
      // Greeting v2 without a secret: the hostile server answers HELLO and GREETING (no proof to make).
      if (body[3] === 7 && body[4] === 0) {
        socket.write(rawFrame([1, 1, 1, 7, 1, 0, [corpus.clusterId || "fuzz", 2, rand.bytes(32)]]));
        return;
      }
      if (body[3] === 0 && body[4] === 0 && Array.isArray(body[6])) {
        socket.write(rawFrame([1, 2, 2, 0, 1, 0, [corpus.clusterId || "fuzz", 2, 7n, body[6][2], new Uint8Array(0), rand.chance(0.5) ? rand.bytes(32) : new Uint8Array(0)]]));
        return;
      }
      if (body[3] === 1 && body[4] === 0 && Array.isArray(body[6])) {
        if (c.answer !== "never") {
          const [key, , newMode] = body[6] as [unknown, unknown, unknown];
          const mutated = c.answer === "mutated";
          const grant = [key, 0, mutated ? rand.pick(MODE_VALUES) : newMode, mutated ? rand.pick(WRITE_SEQ_VALUES) : 5n, false];
          for (let i = 0; i < (c.answer === "twice" ? 2 : 1); i++) socket.write(rawFrame([++seq, lastClientSeq, body[2], 1, 1, 0, grant]));
        }
        // Then the recorded frames, mutated (once per case: a reconnecting client only gets greeted).
        if (framesSent) return;
        framesSent = true;
        for (const frame of c.frames) {
          let out: RawBody = templates.length > 0 ? [...templates[frame.template % templates.length]!] : [1, 0, 1, 1, 1, 0, null];
          out[0] = ++seq;
          out[1] = lastClientSeq;
          for (const m of frame.mutations) out = fieldMutation(new Rand(m ^ c.mutationSeed), [out]).apply(out, 1);
          socket.write(rawFrame(out));
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  try {
    const client = await connect({ servers: [address], name: "fuzz-victim", connectTimeoutMs: 1500 }).catch(() => null);
    if (client !== null) {
      client.on("error", () => undefined);
      try {
        const handle = await client.acquire("fuzz-victim-key", "write", { signal: AbortSignal.timeout(c.durationMs) });
        handle.release();
      } catch {
        // refusals and aborts are the client's right answer to a lying server
      }
      await sleep(50);
      for (const socket of sockets) socket.destroy();
      await client.close().catch(() => undefined);
    }
  } finally {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await sleep(20);
    process.off("uncaughtException", onUncaught);
    process.off("unhandledRejection", onRejection);
  }
  return problems;
}
