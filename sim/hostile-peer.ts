/**
 * Hostile simulated peers (issue 10): processes in the simulated world (sim-world.ts) that connect to
 * the real LockServerRuntime over simulated connections and attack it at the byte level with the
 * hostile-peer fuzzer's own attacks (hostile-attacks.ts: mutated and replayed honest traffic, garbage,
 * lying lengths, frames cut in two, greeting attacks, forged well-formed frames, floods that never read,
 * rogue lock holders, sockets that never greet). What they send goes through `SimEnd.sendRaw`, so the
 * server's real FrameDecoder, codec and session checks see it exactly as they would from TCP.
 *
 * Each hostile peer runs a few cases (`tcpCase`) at random times inside the seed's fault window (or just
 * after it, while the honest workload runs); its
 * corpus is the honest traffic recorded so far in the same world (network taps) plus one synthetic
 * session, so a case is a function of the seed alone.
 *
 * Guarantees:
 * - Deterministic: every draw comes from a Prng derived from the seed (`hostilePrng`), without consuming
 *   the world's streams before the first hostile process is spawned; a run replays from
 *   (seed, hostile count). Nonces and identity keys are random bytes, which only decide whether a proof
 *   verifies, never what is drawn or when.
 * - `owns(line)` says whether a server log line is about a hostile peer's connection or session (its
 *   protocol errors are its own business; the honesty checker skips them, see `excuses`).
 *
 * Known finding F1 (closed 3 December 2026): a client that had a session with the dead server could
 * claim in its recovery report a lock it did not hold, and the honest holder's truthful report was then
 * refused. Grant proofs settle it now (core/grant-tags.ts, core/lock-server.ts onRecoverBatch): a
 * returning holder claims an honest key with the proof of the last grant it really got (stale once it
 * was invalidated, or of another key), or with a made-up one; the honest report refutes it. Refutations
 * of the peers' reports are counted (`stats.refuted`); seed 829 replays the first F1.
 * - Checkers: `greeting-deadline`, a connection that never greets is closed by the server within its
 *   greeting timeout (plus network slack) unless the server died meanwhile; `resigned`, the server never
 *   stops itself (onFatal) for anything but its store or its fence agent failing; `invariant`, no server
 *   log line carries an internal assertion (EINTERNAL) that something caught. The run's own checkers
 *   cover the rest: nothing thrown (an InvariantError included), exclusion, fencing, honest clients never
 *   see EPROTO or EAUTH, convergence.
 * - Every attack starts at most ATTACK_TAIL_US after the world heals and lasts seconds, far less than the
 *   two minutes the convergence checker waits: it measures the honest clients' liveness after the attacks.
 * Relies on: hostile-attacks.ts, sim-world.ts (raw ends, taps), the server's greeting timeout default.
 */
import { Buffer } from "node:buffer";
import { GreetingExchange } from "../src/client/handshake.js";
import { SERVER_LIMITS_DEFAULT } from "../src/core/limits.js";
import { ridToHex } from "../src/core/keys.js";
import { decodeBody } from "../src/protocol/codec.js";
import { WireError, type Message } from "../src/protocol/messages.js";
import { newIdentity } from "../src/io/greeting-proofs.js";
import {
  bodyReader,
  LiveGreeting,
  Rand,
  newHostileIdentity,
  lockRequest,
  rawDecode,
  rawFrame,
  serverRequestAnswer,
  tcpCase,
  toRaw,
  type Corpus,
  type GreetStep,
  type HostileConnection,
  type HostileIdentity,
  type RawBody,
  type TcpCase,
} from "./hostile-attacks.js";
import { fnv1a, Prng } from "./prng.js";
import type { SimEnd, SimProcess, SimWorld } from "./sim-world.js";

/** Attacks start within the fault window or this soon after it (while the honest workload still runs). */
const ATTACK_TAIL_US = 4_000_000;
/** A refused connect is retried this often, this many times (the server may be restarting). */
const CONNECT_RETRY_MS = 300;
const CONNECT_TRIES = 10;
/** How long a returning holder waits for its connection to end before it gives up coming back. */
const RETURN_WAIT_MS = 8_000;
/** Slack past the greeting timeout for the server's close to reach an idle socket. */
const GREETING_SLACK_MS = 1_000;
/** Bounds that keep a seed small: the fuzzer's flood and idle strategies scaled down. */
const FLOOD_MAX = 600;
const IDLE_MAX = 20;
/** Honest sessions and server frames kept as the corpus. */
const SESSIONS_MAX = 16;
const SESSION_FRAMES_MAX = 40;
const SERVER_FRAMES_MAX = 64;

/** One raw hostile connection (`#open`). */
interface Open {
  readonly end: SimEnd;
  /** The next greeting-phase answer, or null (closed, or none within 2 s). */
  next(): Promise<Message | null>;
  /** Resolves when the connection ended, or after `timeoutMs`. */
  ended(timeoutMs: number): Promise<void>;
  isClosed(): boolean;
}

export interface HostileSetup {
  /** Hostile peers in this run. */
  readonly peers: number;
  /** The server's "HOST:PORT". */
  readonly server: string;
  /** The honest clients' keys. */
  readonly honestKeys: readonly string[];
  /** The seed's fault window: attacks start within it or up to ATTACK_TAIL_US after it. */
  readonly windowUs: number;
  /** The server's greeting timeout (SERVER_LIMITS_DEFAULT unless the run sets one). */
  readonly greetingTimeoutMs?: number;
  /** Reports a violation (stops the run). */
  readonly violate: (checker: "greeting-deadline" | "resigned" | "invariant", detail: string) => void;
}

export interface HostileStats {
  cases: number;
  /** Connections per strategy. */
  readonly strategies: Record<string, number>;
  /** Live greetings the server accepted. */
  greeted: number;
  /** Greetings the server answered ERIDTAKEN (a recorded rid taken as a first greeting with the peer's own claim). */
  ridTaken: number;
  /** Recovery reports of the peers the server refuted (another client proved a later grant of the key). */
  refuted: number;
  connections: number;
  bytesSent: number;
  closed: number;
}

/** The hostile peers' PRNG: derived from the seed alone (consumes nothing of the world's streams). */
export function hostilePrng(seed: number): Prng {
  return new Prng(fnv1a(`hostile peers ${seed}`));
}

/** How many hostile peers a seed gets when the run allows up to `max`. */
export function hostileCount(seed: number, max: number): number {
  return max <= 0 ? 0 : hostilePrng(seed).fork("count").int(1, max);
}

export class HostilePeers {
  readonly stats: HostileStats = { cases: 0, strategies: {}, greeted: 0, ridTaken: 0, refuted: 0, connections: 0, bytesSent: 0, closed: 0 };
  readonly #world: SimWorld;
  readonly #setup: HostileSetup;
  readonly #prng: Prng;
  readonly #sessions = new Map<number, Buffer[]>();
  readonly #serverFrames: Buffer[] = [];
  readonly #synthetic: Buffer[];
  readonly #names = new Set<string>();
  /** Rids (hex) hostile peers were accepted as. */
  readonly #rids = new Set<string>();

  constructor(world: SimWorld, setup: HostileSetup) {
    this.#world = world;
    this.#setup = setup;
    this.#prng = hostilePrng(world.seed);
    this.#synthetic = syntheticSession(setup.honestKeys[0] ?? "k1");
    // The corpus: what honest clients sent (whole frames: SimEnd.send carries one per chunk) and what
    // the server sent them.
    world.network.taps.push((from, bytes) => {
      const sender = from.process.name;
      const receiver = from.peer.process.name;
      if (this.#names.has(sender) || this.#names.has(receiver)) return;
      if (/^c\d+$/.test(sender)) {
        let session = this.#sessions.get(from.link.id);
        if (session === undefined) {
          if (this.#sessions.size >= SESSIONS_MAX) return;
          session = [];
          this.#sessions.set(from.link.id, session);
        }
        if (session.length < SESSION_FRAMES_MAX) session.push(Buffer.from(bytes.subarray(4)));
      } else if (this.#serverFrames.length < SERVER_FRAMES_MAX) this.#serverFrames.push(Buffer.from(bytes.subarray(4)));
    });
    // The server's log reaches the trace ("sN: ..."): a server that resigns for anything but its store or
    // its fence agent failing was knocked over by a peer.
    const add = world.trace.add.bind(world.trace);
    world.trace.add = (text: string): void => {
      add(text);
      const fatal = /^(s\d+): .*stopping the lock server: (.*)$/.exec(text);
      if (fatal !== null && !/EIO|store|fenc/i.test(fatal[2]!)) setup.violate("resigned", `${fatal[1]} stopped with hostile peers about: ${fatal[2]}`);
      // An internal assertion a peer reached but something caught (a decoder error closing the connection,
      // a failed greeting turned into a log line) is still one.
      if (/^s\d+: .*(EINTERNAL|InvariantError)/.test(text)) setup.violate("invariant", text);
    };
    for (let i = 0; i < setup.peers; i++) {
      const prng = this.#prng.fork(`peer ${i}`);
      const cases = prng.int(1, 3);
      for (let c = 0; c < cases; c++) {
        const atUs = prng.int(0, setup.windowUs + ATTACK_TAIL_US);
        const caseSeed = prng.u32();
        world.at(atUs, () => void this.#runCase(i, c, caseSeed));
      }
    }
  }

  /** Whether a server log line is about a hostile peer's connection or session. */
  owns(line: string): boolean {
    return /\bh\d+:\d+/.test(line) || line.includes("(hostile-h");
  }

  /**
   * Whether the honesty checker lets a server log line about a protocol error pass: a hostile peer's own
   * (`owns`). A refutation of a peer's recovery report is counted (`stats.refuted`).
   */
  excuses(line: string): boolean {
    if (/recovery report of key .* refuted/.test(line)) this.stats.refuted++;
    return this.owns(line);
  }

  #corpus(): Corpus {
    const sessions = [this.#synthetic, ...[...this.#sessions.values()].filter((s) => s.length >= 2)];
    return {
      sessions,
      serverFrames: this.#serverFrames,
      clusterId: "sim",
      honestKeys: this.#setup.honestKeys,
      ownPid: 4242,
      floodMax: FLOOD_MAX,
      idleMax: IDLE_MAX,
    };
  }

  #process(peer: number): SimProcess {
    const name = `h${peer}`;
    this.#names.add(name);
    const existing = this.#world.processes.find((p) => p.name === name && p.alive);
    return existing ?? this.#world.spawn(name);
  }

  async #runCase(peer: number, index: number, seed: number): Promise<void> {
    const process = this.#process(peer);
    const rand = new Rand(new Prng(seed));
    const c: TcpCase = tcpCase(rand, this.#corpus());
    this.stats.cases++;
    this.#world.trace.add(`h${peer} case ${index}: ${c.connections.map((h) => `${h.strategy}(${h.detail})`).join(" + ")}`);
    const ends: SimEnd[] = [];
    await Promise.all(c.connections.map((h, n) => this.#runConnection(process, `h${peer}.${index}.${n}`, h, rand, ends)));
    await process.sleep(c.durationMs);
    for (const end of ends) end.destroy("hostile case over");
  }

  async #connect(process: SimProcess): Promise<SimEnd | null> {
    for (let attempt = 0; attempt < CONNECT_TRIES; attempt++) {
      try {
        return (await process.transport.connect(this.#setup.server, 5_000, undefined)) as SimEnd;
      } catch {
        await process.sleep(CONNECT_RETRY_MS); // refused (the server is restarting) or timed out
      }
    }
    return null;
  }

  async #runConnection(process: SimProcess, label: string, h: HostileConnection, rand: Rand, ends: SimEnd[]): Promise<void> {
    const world = this.#world;
    this.stats.strategies[h.strategy] = (this.stats.strategies[h.strategy] ?? 0) + 1;
    if (h.idle !== undefined) {
      const mine = (await Promise.all(Array.from({ length: h.idle }, () => this.#connect(process)))).filter((e): e is SimEnd => e !== null);
      const servers = new Set<SimProcess>();
      for (const end of mine) {
        ends.push(end);
        servers.add(end.peer.process);
        end.startRaw({ onBytes: () => undefined, onClose: () => void this.stats.closed++ });
      }
      this.stats.connections += mine.length;
      const deadlineMs = (this.#setup.greetingTimeoutMs ?? SERVER_LIMITS_DEFAULT.greetingTimeoutMs) + GREETING_SLACK_MS;
      await process.sleep(deadlineMs);
      const open = mine.filter((end) => !end.isClosed && end.peer.process.alive);
      if (open.length > 0 && world.stopped === null) {
        this.#setup.violate("greeting-deadline", `${open.length} of ${mine.length} connections of ${label} that never greeted are still open ${deadlineMs} ms later`);
      }
      return;
    }
    const identity = newHostileIdentity();
    const counters: { seq: number; proof?: readonly unknown[] } = { seq: 1000 };
    const first = await this.#open(process, h, rand, counters, ends);
    if (first === null) return;
    for (const step of h.steps) {
      if (first.isClosed() || !process.alive) break;
      if (step.kind === "wait") await process.sleep(step.ms);
      else if (step.kind === "close") {
        first.end.destroy("hostile close");
        return;
      } else if (step.kind === "send") this.#send(first.end, step.bytes);
      else {
        first.end.reading = true;
        await this.#greet(first, step, identity);
        first.end.reading = h.read;
      }
    }
    // A returning holder waits for its connection to end (a server restart) and comes back as the same
    // client, answering the new server's LOCK_RECOVER with its lying report.
    const greet = h.steps.find((step): step is GreetStep => step.kind === "greet");
    let current = first;
    for (let n = 0; n < (h.returns ?? 0) && greet !== undefined && identity.lastServerTerm !== null; n++) {
      await current.ended(RETURN_WAIT_MS);
      if (!current.isClosed() || !process.alive) return;
      await process.sleep(rand.range(0, 500));
      const again = await this.#open(process, h, rand, counters, ends);
      if (again === null) return;
      world.trace.add(`${label} comes back as ${greet.rid.toString(16)} (last server term ${identity.lastServerTerm})`);
      await this.#greet(again, greet, identity);
      current = again;
    }
  }

  /** Opens a raw connection that answers the server's requests by `h.answer`; null when no server took it. */
  async #open(process: SimProcess, h: HostileConnection, rand: Rand, counters: { seq: number; proof?: readonly unknown[] }, ends: SimEnd[]): Promise<Open | null> {
    const end = await this.#connect(process);
    if (end === null) return null;
    ends.push(end);
    this.stats.connections++;
    const answers: Message[] = [];
    let waiter: (() => void) | null = null;
    let closed = false;
    let onEnded: (() => void) | null = null;
    let lastServerSeq = 0;
    const corpus = this.#corpus();
    end.startRaw({
      onBytes: bodyReader((body) => {
        const raw = rawDecode(body);
        if (raw === null) return;
        if ((raw[3] === 0 || raw[3] === 7) && raw[4] === 1) {
          try {
            answers.push(decodeBody(body));
          } catch {
            // an answer the codec refuses ends the greeting like no answer
          }
          waiter?.();
          return;
        }
        if (typeof raw[0] === "number") lastServerSeq = raw[0];
        // A grant's proof (protocol §4.3), kept across this case's connections: a returning holder
        // claims an honest key with it in its recovery report (stale once it was invalidated).
        const lock = raw[6];
        if (raw[3] === 1 && raw[4] === 1 && Array.isArray(lock) && lock.length === 8 && lock[6] !== 0) counters.proof = lock.slice(5);
        if (!h.read) return;
        const answer = serverRequestAnswer(h.answer, raw, rand, corpus, counters.proof);
        if (answer === null) return;
        for (let i = 0; i < answer.times; i++) this.#send(end, rawFrame([++counters.seq, lastServerSeq, raw[2], raw[3], 1, 0, answer.payload]));
      }),
      onClose: () => {
        closed = true;
        this.stats.closed++;
        waiter?.();
        onEnded?.();
      },
    });
    end.reading = h.read;
    const next = (): Promise<Message | null> =>
      new Promise((resolve) => {
        let done = false;
        const take = (force: boolean): void => {
          if (done) return;
          const answer = answers.shift();
          if (answer === undefined && !closed && !force) return;
          done = true;
          waiter = null;
          resolve(answer ?? null);
        };
        take(false);
        if (done) return;
        waiter = () => take(false);
        process.clock.setTimeout(() => take(true), 2_000);
      });
    const ended = (timeoutMs: number): Promise<void> =>
      new Promise((resolve) => {
        if (closed) return resolve();
        onEnded = resolve;
        process.clock.setTimeout(resolve, timeoutMs);
      });
    return { end, next, ended, isClosed: () => closed };
  }

  async #greet(open: Open, step: GreetStep, identity: HostileIdentity): Promise<void> {
    const live = new LiveGreeting(step, `hostile-${open.end.process.name}`, identity);
    this.#send(open.end, rawFrame(live.hello()));
    const helloAnswer = await open.next();
    if (helloAnswer === null) return;
    const greeting = live.greeting(helloAnswer);
    if (greeting === null) return;
    this.#send(open.end, rawFrame(greeting));
    const answer = await open.next();
    if (answer !== null && answer.header.error === WireError.ERIDTAKEN) this.stats.ridTaken++;
    if (answer !== null && live.finish(answer)) {
      this.stats.greeted++;
      this.#rids.add(ridToHex(step.rid));
    }
  }

  #send(end: SimEnd, bytes: Uint8Array): void {
    if (end.sendRaw(bytes)) this.stats.bytesSent += bytes.length;
  }
}

/** A session the corpus always has (an attack may come before any honest traffic): HELLO, GREETING, lock, release, farewell. */
function syntheticSession(key: string): Buffer[] {
  const hello = toRaw(
    new GreetingExchange("synthetic", {
      rid: 7n,
      name: "synthetic",
      pid: 0,
      lastServerTerm: 0n,
      farewell: true,
      admin: false,
      secret: undefined,
      clusterId: "",
      resume: null,
      claim: newIdentity(),
    }).hello(),
  );
  const empty = new Uint8Array(0);
  const greeting: RawBody = [2, 1, 2, 0, 0, 0, ["sim", 2, 7n, 0n, 1, "synthetic", 0, empty, empty, empty]];
  const bodies: RawBody[] = [hello, greeting, lockRequest(1, 2, 3, key, 0, 2), lockRequest(2, 2, 4, key, 2, 0), [3, 2, 5, 3, 0, 0, null]];
  return bodies.map((b) => Buffer.from(rawFrame(b).subarray(4)));
}
