/**
 * The hostile peers' attacks, shared by the fuzzer (test/fuzz/, real processes over TCP) and the
 * simulator (sim/hostile-peer.ts, the real LockServerRuntime over simulated connections): one generator,
 * so an attack found at scale in the simulator replays from a seed, and the fuzzer's strategies run in both.
 *
 * A hostile connection (`connection`, drawn by `tcpCase`) is a list of steps built from recorded real
 * traffic (the `Corpus`) or synthesized raw frames, with one strategy:
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
 *   flood          greet, then many requests, never reading
 *   rogue-holder   greet, take the honest clients' key, answer the server's invalidations wrongly
 *                  (wrong modes, twice, never, huge writeSeq) or not at all
 *   server-frames  frames the server sent (responses, greeting answers) sent back to it
 *   garbage        random bytes
 *   greeting-attack  a live greeting rewritten: a wrong identity proof, the proof or whole GREETING
 *                  replayed from a recorded session, a truncated or oversized nonce, oversized proof,
 *                  claim and name fields, a recorded client's rid without its resumption secret, no claim
 * Greeting v2 needs the server's nonce, so a connection that should get past the greeting has a live
 * "greet" step (`LiveGreeting`: HELLO, then GREETING with proofs made on that connection) whose rewrites
 * apply to what it sends. `serverRequestAnswer` is how a connection answers the server's requests
 * (invalidations, LOCK_RECOVER: lying recovery reports).
 *
 * Guarantees: every attack is a pure function of its `Rand` draws and the corpus (no clock, no
 * Math.random; the identity keys and nonces of a live greeting are random but only ever decide whether
 * a proof verifies, never what is drawn). Raw frames are built below the codec's validation, so anything
 * can be sent (`rawFrame`, `frameBytes`, `rawDecode`).
 * Relies on: @msgpack/msgpack (the codec's library), client/handshake.ts (the real greeting exchange),
 * the codec's limits.
 */
import { Buffer } from "node:buffer";
import { decode, encode } from "@msgpack/msgpack";
import { TERM_MAX } from "../src/core/limits.js";
import { KEY_BYTES_MAX, isReservedRid } from "../src/core/keys.js";
import { FRAME_BYTES_MAX, PROTOCOL_VERSION, type Message } from "../src/protocol/messages.js";
import { GreetingExchange, type GreetingIdentity } from "../src/client/handshake.js";
import { newIdentity, type Identity } from "../src/io/greeting-proofs.js";
import { encodeMessage } from "../src/protocol/codec.js";
import { FrameReader } from "../src/protocol/frame.js";

// ---------------------------------------------------------------------------------------------------
// Raw frames

export type RawBody = unknown[];

export const SAFE_MAX = Number.MAX_SAFE_INTEGER; // 2^53-1
export const U64_MAX = (1n << 64n) - 1n;

/** Frames one MessagePack value (any shape) with a correct length prefix. */
export function rawFrame(value: unknown): Buffer {
  const body = encode(value, { useBigInt64: true });
  return frameBytes(body);
}

/** Frames raw body bytes with a correct length prefix. */
export function frameBytes(body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(4 + body.length);
  out.writeUInt32BE(body.length, 0);
  out.set(body, 4);
  return out;
}

/** Cuts a byte stream into frame bodies; a trailing partial frame is dropped. */
export function splitFrames(stream: Buffer): Buffer[] {
  const bodies: Buffer[] = [];
  let at = 0;
  while (at + 4 <= stream.length) {
    const length = stream.readUInt32BE(at);
    if (at + 4 + length > stream.length) break;
    bodies.push(Buffer.from(stream.subarray(at + 4, at + 4 + length)));
    at += 4 + length;
  }
  return bodies;
}

/**
 * Reads a live byte stream of the server's frames and hands each frame's body on, undecoded: the codec's
 * own FrameReader with no body decoding. A body may be a view into the chunk: use or copy it at once.
 */
export function bodyReader(onBody: (body: Uint8Array) => void): (chunk: Uint8Array) => void {
  const reader = new FrameReader((body) => body);
  return (chunk) => {
    for (const body of reader.push(chunk)) onBody(body);
  };
}

/** Decodes a body without the codec's checks; null when it is not MessagePack or not an array. */
export function rawDecode(body: Uint8Array): RawBody | null {
  try {
    const value = decode(body, { useBigInt64: true });
    return Array.isArray(value) ? (value as RawBody) : null;
  } catch {
    return null;
  }
}

/** A codec-built message as a raw body (to rewrite it). */
export function toRaw(message: Message): RawBody {
  return rawDecode(Buffer.from(encodeMessage(message).subarray(4)))!;
}

// ---------------------------------------------------------------------------------------------------
// Randomness

/** The attacks' randomness: a view over any uniform [0, 1) source (the fuzzer's mulberry32, the simulator's Prng). */
export class Rand {
  private readonly next: () => number;
  constructor(source: (() => number) | { float(): number }) {
    this.next = typeof source === "function" ? source : () => source.float();
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

// ---------------------------------------------------------------------------------------------------
// Recorded traffic

export interface Corpus {
  /** Client→server sessions, greeting first (raw bodies). */
  readonly sessions: readonly (readonly Buffer[])[];
  /** Frames the server sent (greeting answers, invalidations, responses). */
  readonly serverFrames: readonly Buffer[];
  readonly clusterId: string;
  /** The keys the honest clients contend on (attacks take, flood and claim them). */
  readonly honestKeys: readonly string[];
  /** A pid a rogue holder may name in its greeting besides 0, 1 and 2^22 (the fuzzer's own). */
  readonly ownPid: number;
  /** Most requests a flood sends (4000 against real processes) and most idle sockets (120). */
  readonly floodMax?: number;
  readonly idleMax?: number;
}

export function decoded(body: Buffer): RawBody {
  return rawDecode(body) ?? [1, 0, 1, 3, 0, 0, null];
}

export function isGreeting(body: RawBody): boolean {
  return body[3] === 0 && body[4] === 0 && Array.isArray(body[6]);
}

export function isHello(body: RawBody): boolean {
  return body[3] === 7 && body[4] === 0 && Array.isArray(body[6]);
}

/** A greet step for `rid`, optionally rewriting what it sends (hostile variants). */
export function greetStep(
  rid: bigint,
  options: GreetStep["options"] = {},
  rewrites: { hello?: Rewrite[]; greeting?: Rewrite[]; signedTerm?: () => bigint; note?: string } = {},
): GreetStep {
  return {
    kind: "greet",
    rid,
    options,
    hello: rewrites.hello ?? [],
    greeting: rewrites.greeting ?? [],
    ...(rewrites.signedTerm === undefined ? {} : { signedTerm: rewrites.signedTerm }),
    note: rewrites.note ?? "",
  };
}

/**
 * A recorded session as steps: its recorded HELLO and GREETING become a live greet step for `rid`
 * (greeting rewrites apply to the live GREETING), the rest is sent as recorded.
 */
export function sessionSteps(bodies: readonly Buffer[], rid: bigint, rand: Rand, rewrites: { hello?: Rewrite[]; greeting?: Rewrite[] } = {}): Step[] {
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
function greetingAttack(rand: Rand, corpus: Corpus): { note: string; hello?: Rewrite[]; greeting?: Rewrite[]; signedTerm?: () => bigint; rid?: bigint } {
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
      // Signed under the peer's own claim, so the proof verifies: for term 0 (a first greeting) the server
      // answers ERIDTAKEN once the rid is recorded, and before that (a server that crashed before recording
      // it) this is the race of known finding F2, which the honest client must win by greeting again under
      // another rid; for a later term, EAUTH (the claim is not the rid's).
      const rid = recorded === null ? 1n : BigInt((recorded[6] as unknown[])[2] as bigint | number);
      return { note: "a recorded client's rid under the peer's own claim", rid, signedTerm: () => rand.pick([0n, 1n, 2n, 5n]) };
    }
    case 6:
      return { note: "wrong cluster proof", greeting: [(b) => setPayload(b, 7, rand.bytes(32))] };
    default:
      return { note: "greeting payload with a trailing field", greeting: [(b) => setPayload(b, 10, rand.bytes(8))] };
  }
}

export function lockRequest(seq: number, ack: number, id: number, key: string, oldMode: number, newMode: number, noQueue = false): RawBody {
  return [seq, ack, id, 1, 0, 0, [Buffer.from(key, "latin1"), oldMode, newMode, 0, noQueue, 0, 0, 0]];
}

/** Rewrites a session's greeting rid and pid (recorded ones vary between runs; a case must not depend on them). */
export function withRid(session: readonly Buffer[], rid: bigint): Buffer[] {
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

export type Rewrite = (body: RawBody) => RawBody;

export interface GreetStep {
  readonly kind: "greet";
  readonly rid: bigint;
  readonly options: { readonly lastServerTerm?: bigint; readonly farewell?: boolean; readonly admin?: boolean; readonly pid?: number };
  readonly hello: readonly Rewrite[];
  readonly greeting: readonly Rewrite[];
  /** The lastServerTerm the GREETING is signed for, drawn when it is signed (else the options'). */
  readonly signedTerm?: () => bigint;
  readonly note: string;
}

export type Step =
  | GreetStep
  | { readonly kind: "send"; readonly bytes: Buffer }
  | { readonly kind: "wait"; readonly ms: number }
  | { readonly kind: "close" };

/** Hostile connections opened together against one server. */
export interface TcpCase {
  readonly kind: "tcp";
  readonly connections: HostileConnection[];
  readonly durationMs: number;
}

export interface HostileConnection {
  readonly strategy: string;
  readonly detail: string;
  readonly steps: Step[];
  /** false: never read (the socket is paused), so the server's writes back up. */
  readonly read: boolean;
  /** Answer the server's requests (invalidations, recover requests): how. */
  readonly answer: "no" | "correct" | "mutated" | "twice" | "never";
  /** Open this many sockets that never send anything (instead of the steps). */
  readonly idle?: number;
  /**
   * After the connection ends (a server restart, a reset), come back this many times as the same client
   * (its resumption secret, the server term it last saw) and answer LOCK_RECOVER by `answer`: a recovery
   * report claiming an honest key. The simulator's peers do; the fuzzer's recover cases restart the
   * server themselves instead and run this connection once.
   */
  readonly returns?: number;
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
  ...Array<"forged">(2).fill("forged"),
  "returning-holder",
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

export function hostileRid(rand: Rand): bigint {
  const r = rand.float();
  if (r < 0.05) return 0n;
  if (r < 0.1) return U64_MAX;
  return rand.u64() | 1n;
}

function pickSession(rand: Rand, corpus: Corpus): Buffer[] {
  const index = rand.int(corpus.sessions.length);
  const session = withRid(corpus.sessions[index]!, hostileRid(rand));
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
        const mutation = fieldMutation(rand, session, corpus);
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
      const sockets = rand.range(10, Math.max(10, corpus.idleMax ?? 120));
      return { ...base, detail: `${sockets} sockets that never greet`, steps: [], read: false, idle: sockets };
    }
    case "flood": {
      const requests = rand.range(200, Math.max(200, corpus.floodMax ?? 4000));
      const rid = hostileRid(rand);
      const bodies: RawBody[] = [];
      const sameKey = rand.chance(0.3);
      const target = sameKey ? honestKey(rand, corpus) : "";
      for (let i = 0; i < requests; i++) {
        const key = sameKey ? target : `fuzz-flood-${i % 997}`;
        bodies.push(lockRequest(i + 1, rand.chance(0.9) ? 0 : 1, i + 2, key, 0, rand.pick([1, 2, 3]), rand.chance(0.2)));
      }
      const bytes = Buffer.concat(bodies.map((b) => rawFrame(b)));
      return { ...base, read: false, detail: `${requests} requests${sameKey ? " on the honest key" : ""}, never reading`, steps: [greetStep(rid), { kind: "send", bytes }] };
    }
    case "rogue-holder": {
      const answer = rand.pick(["correct", "mutated", "twice", "never"] as const);
      const mode = rand.pick([2, 3, 1]);
      const steps: Step[] = [
        greetStep(hostileRid(rand), { pid: rand.pick([0, 1, corpus.ownPid, 4194304]) }),
        { kind: "send", bytes: rawFrame(lockRequest(1, 0, 2, honestKey(rand, corpus), 0, mode)) },
      ];
      return { ...base, read: true, answer, detail: `mode ${mode}, answers ${answer}`, steps };
    }
    case "returning-holder": {
      // A rogue holder that survives restarts: it comes back with its resumption secret and lies in its
      // recovery report (a write lock on an honest key, writeSeq 1 or near 2^64), or answers twice.
      const answer = rand.pick(["correct", "mutated", "twice"] as const);
      const mode = rand.pick([2, 3, 1]);
      const returns = rand.range(1, 3);
      const steps: Step[] = [greetStep(rand.u64() | 1n), { kind: "send", bytes: rawFrame(lockRequest(1, 0, 2, honestKey(rand, corpus), 0, mode)) }];
      return { ...base, read: true, answer, returns, detail: `mode ${mode}, comes back ${returns} time(s), recovery answers ${answer}`, steps };
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
      if (rand.chance(0.6)) steps.push({ kind: "send", bytes: rawFrame(lockRequest(1, 0, 3, honestKey(rand, corpus), 0, rand.pick([1, 2]))) });
      return { ...base, detail: attack.note, steps: [...steps, ...tail(rand)] };
    }
    case "forged": {
      // Greeted live, then well-formed frames a client has no business sending (consecutive seqs, so
      // the session delivers them): each must be refused or ignored, never change what honest clients see.
      const notes: string[] = [];
      const frames: RawBody[] = [];
      const count = rand.range(1, 4);
      for (let i = 0; i < count; i++) {
        const [note, body] = forgedFrame(rand, corpus, i + 1);
        notes.push(note);
        frames.push(body);
      }
      const steps: Step[] = [greetStep(hostileRid(rand), { farewell: rand.chance(0.5) })];
      for (const body of frames) steps.push({ kind: "send", bytes: rawFrame(body) }, ...(rand.chance(0.3) ? [{ kind: "wait", ms: rand.range(1, 50) } as Step] : []));
      return { ...base, answer: rand.pick(["no", "correct", "mutated", "twice"] as const), detail: notes.join(", "), steps: [...steps, ...tail(rand)] };
    }
    case "garbage": {
      const bytes = rand.bytes(rand.range(1, 2048));
      return { ...base, detail: `${bytes.length} random bytes`, steps: [{ kind: "send", bytes }, ...tail(rand)] };
    }
  }
}

/**
 * A well-formed but hostile frame (seq `seq`, ack 0: after a greeting the server has sent nothing on the
 * session yet, so the session delivers it to the lock table): [what it is, the frame].
 */
function forgedFrame(rand: Rand, corpus: Corpus, seq: number): [string, RawBody] {
  const key = Buffer.from(honestKey(rand, corpus), "latin1");
  const id = rand.pick([1, 2, 3, seq + 1, 1000]);
  const recorded = recordedGreeting(corpus, rand);
  const otherRid = recorded === null ? 1n : BigInt((recorded[6] as unknown[])[2] as bigint | number);
  switch (rand.int(8)) {
    case 0:
      return ["an invalidation answer never asked for", [seq, 0, id, 1, 1, 0, [key, 2, rand.pick([0, 1]), rand.pick(WRITE_SEQ_VALUES), false, 0, 0, 0]]];
    case 1:
      return ["a downgrade of a key never held", [seq, 0, seq + 1, 1, 0, 0, [key, rand.pick([1, 2, 3]), rand.pick([0, 1]), 0n, false, 0, 0, 0]]];
    case 2:
      return ["a recovery report nobody asked for, claiming an honest key", [seq, 0, id, 2, 1, 0, [[key, rand.pick([1, 2, 3]), rand.pick(WRITE_SEQ_VALUES), 1n, 1, 1]]]];
    case 3:
      return ["a farewell naming another client's rid", [seq, 0, seq + 1, 3, 0, 0, [otherRid]]];
    case 4:
      return ["a farewell answer never asked for", [seq, 0, id, 3, 1, 0, null]];
    case 5:
      return ["a LOCK carrying a recovery report (wrong tag)", [seq, 0, seq + 1, 1, 0, 0, [[key, 2, 1n, 1n, 1, 1]]]];
    case 6:
      return ["an admin query on a client session", [seq, 0, seq + 1, rand.pick([4, 5, 6]), 0, 0, rand.pick([null, [null, 10]])]];
    default:
      return ["a GREETING answer sent to the server", [seq, 0, id, 0, 1, 0, [corpus.clusterId, PROTOCOL_VERSION, 1n, otherRid, new Uint8Array(0), new Uint8Array(0)]]];
  }
}

function tail(rand: Rand): Step[] {
  const r = rand.float();
  if (r < 0.3) return [{ kind: "close" }];
  if (r < 0.5) return [{ kind: "wait", ms: rand.range(0, 300) }, { kind: "close" }];
  return [];
}

export function shuffle<T>(rand: Rand, items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = rand.int(i + 1);
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

const INTERESTING_BYTES = [0x00, 0xff, 0x7f, 0x80, 0xc0, 0xc1, 0xcf, 0xd3, 0xdc, 0xdd, 0xde, 0xdf, 0xc4, 0xc6, 0x01, 0x07];

export function mutateBytes(rand: Rand, body: Buffer): [Buffer, string] {
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
export const MODE_VALUES = [0, 1, 2, 3, 4, 255, -1];
/** The LOCK payload index a field mutation of case 9 sets, by its value mod 4: writeSeq or a proof field. */
const PROOF_OR_WRITE_SEQ = [3, 5, 6, 7];
export const WRITE_SEQ_VALUES = [0n, 1n, TERM_MAX, TERM_MAX + 1n, 2n ** 63n, U64_MAX - 1n, U64_MAX];

export function setPayload(body: RawBody, index: number, value: unknown): RawBody {
  const payload = Array.isArray(body[6]) ? [...(body[6] as unknown[])] : [];
  payload[index] = value;
  return [...body.slice(0, 6), payload];
}

export function fieldMutation(rand: Rand, session: readonly RawBody[], corpus: Corpus): FieldMutation {
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
      const key = rand.chance(0.5) ? Buffer.from(honestKey(rand, corpus)) : Buffer.alloc(length, 0x61);
      return { note: `key of ${key.length} bytes`, apply: (b) => setPayload(b, 0, key) };
    }
    case 9: {
      // writeSeq, or one of the grant proof's fields (grantTerm, grantNo, grantTag: protocol §4.3), chosen by
      // the value drawn (no draw of its own, so the seeds of the hostile runs keep their cases): numbers out
      // of range, and 0 or 1 where the others say otherwise (a term without a number, a tag without both,
      // a proof in a request).
      const value = rand.pick(WRITE_SEQ_VALUES);
      const index = PROOF_OR_WRITE_SEQ[Number(value % 4n)]!;
      const field = ["key", "oldMode", "newMode", "writeSeq", "noQueue", "grantTerm", "grantNo", "grantTag"][index];
      return { note: `${field} = ${value}`, apply: (b) => setPayload(b, index, value) };
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
        version: rand.pick([0, PROTOCOL_VERSION - 1, 2 ** 32]),
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
// Running the steps: the parts both transports share

/**
 * A live greeting (greeting v2) with a greet step's rewrites: `hello()` is the HELLO to send; given the
 * server's answer, `greeting()` is the GREETING with proofs made on this connection (null when the HELLO
 * was refused). Never throws.
 */
export class LiveGreeting {
  private readonly exchange: GreetingExchange;
  /** What the exchange signs: its lastServerTerm is set when the GREETING is made (`signedTerm`). */
  private readonly signed: { -readonly [K in keyof GreetingIdentity]: GreetingIdentity[K] };

  /**
   * `identity`: what a client keeps between greetings (its claim, the resumption identity and term the
   * server gave it); `finish` updates it, so a later LiveGreeting with it comes back as the same client.
   */
  constructor(
    private readonly step: GreetStep,
    name = "fuzz-hostile",
    private readonly identity: HostileIdentity = newHostileIdentity(),
  ) {
    this.signed = {
      rid: isReservedRid(step.rid) ? 1n : step.rid,
      name,
      pid: step.options.pid ?? 0,
      lastServerTerm: identity.lastServerTerm ?? step.options.lastServerTerm ?? 0n,
      farewell: step.options.farewell ?? false,
      admin: step.options.admin ?? false,
      secret: undefined,
      clusterId: identity.clusterId,
      resume: identity.resume,
      claim: identity.claim,
    };
    this.exchange = new GreetingExchange("hostile", this.signed);
  }

  /** Takes the GREETING answer: true when it accepted us (the identity now holds its resumption secret). */
  finish(answer: Message): boolean {
    try {
      const result = this.exchange.finish(answer);
      this.identity.resume = result.resume ?? this.identity.resume;
      this.identity.lastServerTerm = result.response.serverTerm;
      this.identity.clusterId = result.response.clusterId;
      return true;
    } catch {
      return false;
    }
  }

  hello(): RawBody {
    let hello = toRaw(this.exchange.hello());
    for (const rewrite of this.step.hello) hello = rewrite(hello);
    return hello;
  }

  greeting(answer: Message): RawBody | null {
    let greeting: RawBody;
    try {
      // Drawn only for a HELLO answer the exchange goes on from (a refusal ends the greeting undrawn).
      if (this.step.signedTerm !== undefined && answer.payload.kind === "hello-response") this.signed.lastServerTerm = this.step.signedTerm();
      greeting = toRaw(this.exchange.greeting(answer));
    } catch {
      return null; // refused at HELLO (the server's answer was an error)
    }
    const step = this.step;
    if (isReservedRid(step.rid)) greeting = setPayload(greeting, 2, step.rid); // a reserved rid, refused by the codec
    for (const rewrite of step.greeting) greeting = rewrite(greeting);
    return greeting;
  }
}

/** What a hostile client keeps between greetings (LiveGreeting). */
export interface HostileIdentity {
  readonly claim: Identity;
  resume: Identity | null;
  clusterId: string;
  /** The term of the last server that accepted us (null before the first greeting). */
  lastServerTerm: bigint | null;
}

export function newHostileIdentity(): HostileIdentity {
  return { claim: newIdentity(), resume: null, clusterId: "", lastServerTerm: null };
}

/**
 * How a hostile connection answers one request the server sent it (raw body), by its `answer`
 * strategy: the payload of the answer, or null for none. An invalidation (cmd 1) is answered with the
 * mode asked for, or (mutated) wrong modes and writeSeqs; a LOCK_RECOVER (cmd 2) with a recovery report
 * claiming an honest key (mutated: with a writeSeq near 2^64).
 */
export function serverRequestAnswer(
  answer: HostileConnection["answer"],
  body: RawBody,
  rand: Rand,
  corpus: Corpus,
  proof: readonly unknown[] = NO_PROOF,
): { payload: unknown; times: number } | null {
  if (answer === "no" || answer === "never" || body[4] !== 0) return null;
  const payload = body[6];
  let out: unknown;
  if (body[3] === 1 && Array.isArray(payload)) {
    const [key, , newMode] = payload as [unknown, unknown, unknown];
    const mutated = answer === "mutated";
    out = [key, mutated ? rand.pick(MODE_VALUES) : 2, mutated ? rand.pick(MODE_VALUES) : newMode, mutated ? rand.pick(WRITE_SEQ_VALUES) : 0n, false, 0, 0, 0];
  } else if (body[3] === 2) {
    // A write lock on an honest key, with the proof of the last grant this client really got (stale, or
    // for another key or mode: it does not verify as a write of this key unless it is one), or, mutated,
    // a proof made up from the writeSeq drawn.
    const writeSeq = answer === "mutated" ? rand.pick(WRITE_SEQ_VALUES) : 1n;
    const claimed = answer === "mutated" ? [1n, 1, Number(BigInt(writeSeq) % (1n << 53n))] : proof;
    out = [[Buffer.from(honestKey(rand, corpus)), 2, writeSeq, ...claimed]];
  } else return null;
  return { payload: out, times: answer === "twice" ? 2 : 1 };
}

/** The proof fields of a grant never received (protocol §4.5: a report that proves nothing). */
const NO_PROOF: readonly unknown[] = [0, 0, 0];

/** One of the keys the honest clients use (no draw when there is one: fuzz seeds keep their cases). */
export function honestKey(rand: Rand, corpus: Corpus): string {
  return corpus.honestKeys.length === 1 ? corpus.honestKeys[0]! : rand.pick(corpus.honestKeys);
}
