/**
 * Hostile peers for the fuzzer: cases drawn from (seed, case index) and run against a real target.
 *
 * A TCP case opens 1–3 hostile connections to the serving member; each follows one strategy of
 * sim/hostile-attacks.ts (byte and field mutations of recorded real traffic, replays, reordering,
 * truncation, lying lengths, idle sockets, floods that never read, rogue lock holders, server frames sent
 * back, garbage, greeting attacks, forged well-formed frames; a returning holder runs here as a rogue
 * holder, the recover cases below restart the server instead). The simulator's hostile peers
 * (sim/hostile-peer.ts) run the same generator against the real server in the simulated world, where an
 * attack found at scale replays from the simulator's seed.
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
 * Relies on: sim/hostile-attacks.ts (the attacks, raw frames), wire.ts, src/io/udp.ts (datagram layout
 * and CRC), the codec's limits.
 */
import dgram from "node:dgram";
import net from "node:net";
import { Buffer } from "node:buffer";
import { setTimeout as sleep } from "node:timers/promises";
import { prng } from "../support/prng.js";
import { clusterHash, crc32c, QUORUM_MESSAGE_BYTES } from "../../src/io/udp.js";
import { TERM_MAX } from "../../src/core/limits.js";
import { connect } from "../../src/index.js";
import { COUNTER_KEY } from "./honest.js";
import { decodeBody, encodeMessage } from "../../src/protocol/codec.js";
import { PROTOCOL_VERSION, type Message } from "../../src/protocol/messages.js";
import { RawIdentity, rawGreet } from "../support/greet.js";
import {
  bodyReader,
  LiveGreeting,
  MODE_VALUES,
  Rand,
  U64_MAX,
  WRITE_SEQ_VALUES,
  decoded,
  fieldMutation,
  lockRequest,
  rawDecode,
  rawFrame,
  serverRequestAnswer,
  splitFrames,
  tcpCase,
  toRaw,
  type Corpus,
  type GreetStep,
  type HostileConnection,
  type RawBody,
  type TcpCase,
} from "../../sim/hostile-attacks.js";
import { splitAddress } from "./wire.js";

export { Rand, type Corpus, type TcpCase };

/** The fuzzer's Rand for a 32-bit seed (mulberry32). */
export function seededRand(seed: number): Rand {
  return new Rand(prng(seed));
}

/** The PRNG seed of case `index` of run `seed` (both 32-bit). */
export function caseSeed(seed: number, index: number): number {
  let h = (seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

// ---------------------------------------------------------------------------------------------------
// Cases



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

/** The term the hostile server of client cases greets with (its grants' proofs name it, as the client checks). */
const HOSTILE_SERVER_TERM = 7n;

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
export async function runTcpCase(c: TcpCase, address: string, rand: Rand, greetingTimeoutMs: number, corpus: Corpus): Promise<string[]> {
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
    if (h.read) answerServer(socket, h, rand, corpus);
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
  socket.on(
    "data",
    bodyReader((body) => {
      const raw = rawDecode(body);
      if (raw !== null && (raw[3] === 0 || raw[3] === 7) && raw[4] === 1) into.push(Buffer.from(body));
    }),
  );
}

/**
 * A live greeting (greeting v2, sim/hostile-attacks.ts LiveGreeting) on a socket: HELLO, wait for its
 * answer, GREETING with proofs made on this connection, wait for its answer. Never throws; a refusal
 * simply ends it.
 */
async function liveGreet(socket: net.Socket, step: GreetStep, answers: Buffer[]): Promise<void> {
  const live = new LiveGreeting(step);
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
  await send(live.hello());
  const helloAnswer = await next();
  if (helloAnswer === null || socket.destroyed) return;
  const greeting = live.greeting(helloAnswer);
  if (greeting === null) return;
  await send(greeting);
  await next();
}

/** Reads the server's frames and answers its requests the way the connection's strategy says. */
function answerServer(socket: net.Socket, h: HostileConnection, rand: Rand, corpus: Corpus): void {
  let lastServerSeq = 0;
  let seq = 1000;
  frameReader(socket, (body) => {
    if (typeof body[0] === "number") lastServerSeq = body[0];
    const answer = serverRequestAnswer(h.answer, body, rand, corpus);
    if (answer === null) return;
    for (let i = 0; i < answer.times; i++) socket.write(rawFrame([++seq, lastServerSeq, body[2], body[3], 1, 0, answer.payload]));
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
  socket.on(
    "data",
    bodyReader((bytes) => {
      const body = rawDecode(bytes);
      if (body !== null) onBody(body);
    }),
  );
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

/** Runs a recover case: lock, restart (through `restart`), reconnect as the same client and lie in the report (with its own grant's proof, valid only for its own key). */
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
  const greetingAnswer = firstAnswer === null ? undefined : toRaw(firstAnswer);
  const termField = Array.isArray(greetingAnswer?.[6]) ? (greetingAnswer[6][2] as unknown) : undefined;
  const answeredTerm = typeof termField === "bigint" || typeof termField === "number" ? termField : null;
  // A refused greeting (the same case run twice in one run draws the same rid, recorded the first time:
  // ERIDTAKEN) leaves nothing to recover: the case ends there.
  if (answeredTerm === null && greetingAnswer !== undefined) {
    first.socket.destroy();
    return;
  }
  first.socket.write(rawFrame(lockRequest(1, 0, 2, key, 0, 2)));
  const grant = await waitFor(first.socket, () => first.bodies.find((b) => b[3] === 1 && b[4] === 1), 3000);
  const serverTerm = answeredTerm ?? 1;
  const granted = Array.isArray(grant?.[6]) ? BigInt(grant[6][3] as bigint | number) : 1n;
  // The grant's proof (protocol §4.3): genuine for the own key, and claimed for the others too, where it
  // does not verify (it names another key).
  const proof: unknown[] = Array.isArray(grant?.[6]) && grant[6].length === 8 ? grant[6].slice(5) : [0, 0, 0];
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
        ...(r.mode === 0 ? [0, 0, 0] : proof),
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
  const rand = seededRand(c.mutationSeed);
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
        socket.write(rawFrame([1, 1, 1, 7, 1, 0, [corpus.clusterId || "fuzz", PROTOCOL_VERSION, rand.bytes(32)]]));
        return;
      }
      if (body[3] === 0 && body[4] === 0 && Array.isArray(body[6])) {
        socket.write(rawFrame([1, 2, 2, 0, 1, 0, [corpus.clusterId || "fuzz", PROTOCOL_VERSION, HOSTILE_SERVER_TERM, body[6][2], new Uint8Array(0), rand.chance(0.5) ? rand.bytes(32) : new Uint8Array(0)]]));
        return;
      }
      if (body[3] === 1 && body[4] === 0 && Array.isArray(body[6])) {
        if (c.answer !== "never") {
          const [key, , newMode] = body[6] as [unknown, unknown, unknown];
          const mutated = c.answer === "mutated";
          // A proof naming the term this server greeted with, as the client checks (its tag is the server's business).
          const grant = [key, 0, mutated ? rand.pick(MODE_VALUES) : newMode, mutated ? rand.pick(WRITE_SEQ_VALUES) : 5n, false, ...(newMode === 0 ? [0, 0, 0] : [HOSTILE_SERVER_TERM, 1, 12345])];
          for (let i = 0; i < (c.answer === "twice" ? 2 : 1); i++) socket.write(rawFrame([++seq, lastClientSeq, body[2], 1, 1, 0, grant]));
        }
        // Then the recorded frames, mutated (once per case: a reconnecting client only gets greeted).
        if (framesSent) return;
        framesSent = true;
        for (const frame of c.frames) {
          let out: RawBody = templates.length > 0 ? [...templates[frame.template % templates.length]!] : [1, 0, 1, 1, 1, 0, null];
          out[0] = ++seq;
          out[1] = lastClientSeq;
          for (const m of frame.mutations) out = fieldMutation(seededRand(m ^ c.mutationSeed), [out], corpus).apply(out, 1);
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
