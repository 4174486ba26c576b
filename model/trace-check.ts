/**
 * Trace validation: replays a simulator protocol trace (sim/trace.ts, JSON lines) step by step against
 * the transition rules of the Promela model (model/keylock.pml) and reports the first step the model
 * does not allow.
 *
 *   npx tsx model/trace-check.ts FILE      prints "ok, N events" or the first disallowed step; exit 1
 *
 * The rules below are the model's, transcribed rule for rule and named after the Promela inlines they
 * mirror (process, grant_head, client_gone, finish_recovery, handle_up, make_progress, check_all);
 * docs/model.md says how the two are kept together (the same tables, and test/model/drivers-trace.test.ts
 * runs both the model's mutations and the simulator's). What is checked:
 * - server: every grant, invalidation and refusal the lock table decides is exactly the next effect the
 *   model's `process` produces for that key after the inputs so far (requests, invalidation answers,
 *   recovery batches, departures, recovery hold and resume), and no effect the model does not produce
 *   (nothing while recovery holds, nothing on a key with an invalidation outstanding); write tokens
 *   strictly increase across server incarnations and stay above every recovered token (P3, P4).
 * - clients: one request per key (P7); a handle only under a cached mode that satisfies it, sharing
 *   with the client's own handles (P2) and with every other client's handles (P1); an invalidation
 *   answered only when every handle on the key is served by its target.
 * Environment choices the model leaves open are accepted both ways: a write head may wait for a
 * fencing token (its effects then come later), and a no-queue write request may be refused for lack
 * of one.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { TraceEvent } from "../sim/trace.js";

type Mode = "null" | "read" | "write" | "write_only";

/** keylock.pml COMPAT_X / COMPAT_S / INVMODE / SATISFIES / SHARE / LOWERED, as in src/core/modes.ts. */
const compatX = (g: Mode, r: Mode): boolean => g === "null" || r === "null" || (g === r && (g === "read" || g === "write_only"));
const compatS = (g: Mode, r: Mode): boolean => (g === r && (g === "read" || g === "write_only")) || (g === "read" && r === "write");
const invMode = (g: Mode, r: Mode): Mode => (g === "write" && r === "read" ? "read" : "null");
const satisfies = (g: Mode, w: Mode): boolean => w === "null" || g === w || (g === "write" && w === "read");
const share = (h: Mode, w: Mode): boolean => h === "null" || w === "null" || (h === w && (h === "read" || h === "write_only"));
const lowered = (f: Mode, t: Mode): Mode =>
  f === t ? f : (f === "write" && t === "read") || (f === "read" && t === "write") ? "read" : "null";
const canWrite = (m: Mode): boolean => m === "write" || m === "write_only";

interface Effect {
  kind: "grant" | "invalidate" | "refuse";
  c: number;
  key: string;
  mode: Mode;
  old: Mode;
}

interface KeyState {
  /** granted or invalidated entries: client → mode */
  granted: Map<number, Mode>;
  invalidated: Set<number>;
  requested: { c: number; mode: Mode; noQueue: boolean }[];
  /** effects the model produced and the trace has not shown yet, in order */
  expected: Effect[];
  /** the head is a write request that may be waiting for a fencing token */
  seqWait: boolean;
}

export interface TraceVerdict {
  readonly ok: boolean;
  readonly events: number;
  /** 1-based index of the first step the model does not allow */
  readonly step?: number;
  readonly event?: TraceEvent;
  readonly reason?: string;
}

class Disallowed extends Error {}
function disallow(reason: string): never {
  throw new Disallowed(reason);
}

class Model {
  keys = new Map<string, KeyState>();
  held = false;
  live = false;
  gone = new Set<number>();
  /** highest write token handed out or recovered, over every server */
  seqFloor = 0n;
  // clients
  requests = new Map<string, Mode>(); // `${c}|${key}` → outstanding request mode
  /**
   * `${c}|${key}` → cached mode: set by a grant, lowered when an invalidation's callback starts (make_progress:
   * cm = LOWERED(cm, target)), or at its answer when it is answered without a callback (nothing above the
   * target held, or the client is leaving). Never lowered again at the answer of a started one: a grant
   * the client applied meanwhile (a new server granting from the mode it was reported, after failover)
   * stands, as in keylock.pml, whose answer_head leaves cm alone.
   */
  cached = new Map<string, Mode>();
  /** `${c}|${key}` of invalidations whose callback started and that are not answered yet (one per key at most). */
  invStarted = new Set<string>();
  handles = new Map<number, Map<number, { key: string; mode: Mode }>>(); // c → id → handle
  out = new Set<number>();

  key(k: string): KeyState {
    let s = this.keys.get(k);
    if (s === undefined) {
      s = { granted: new Map(), invalidated: new Set(), requested: [], expected: [], seqWait: false };
      this.keys.set(k, s);
    }
    return s;
  }

  /** keylock.pml process(k) with grant_head(k); `tokens`: a write head may proceed now. */
  process(k: string, tokens: boolean): void {
    const s = this.key(k);
    if (this.held) return;
    while (s.requested.length > 0 && s.invalidated.size === 0) {
      const head = s.requested[0]!;
      if (canWrite(head.mode)) {
        if (!tokens) {
          s.seqWait = true; // the token may be missing: decided when the trace shows what happened
          return;
        }
        tokens = false; // one token is known to be there; the next write head may wait again
      }
      s.seqWait = false;
      for (const [c, g] of s.granted) {
        if (s.invalidated.has(c)) continue;
        if (c === head.c ? compatS(g, head.mode) : compatX(g, head.mode)) continue;
        s.expected.push({ kind: "invalidate", c, key: k, mode: invMode(g, head.mode), old: g });
        s.invalidated.add(c);
      }
      if (s.invalidated.size > 0) return;
      s.requested.shift();
      const old = s.granted.get(head.c) ?? "null";
      s.granted.delete(head.c);
      s.expected.push({ kind: "grant", c: head.c, key: k, mode: head.mode, old });
      if (head.mode !== "null") s.granted.set(head.c, head.mode);
    }
  }

  /** An input reached the lock table: every effect of earlier inputs must have been shown. */
  settled(): void {
    for (const [k, s] of this.keys) {
      if (s.expected.length > 0) {
        const e = s.expected[0]!;
        disallow(`the model's ${e.kind} to c${e.c} on ${k} (${e.old}->${e.mode}) never happened`);
      }
    }
  }

  clientGone(c: number): void {
    for (const [k, s] of this.keys) {
      s.granted.delete(c);
      s.invalidated.delete(c);
      s.requested = s.requested.filter((r) => r.c !== c);
      this.process(k, false);
    }
  }

  step(ev: TraceEvent): void {
    switch (ev.e) {
      case "server-start":
        this.keys.clear();
        this.held = false;
        this.live = true;
        this.gone.clear();
        return;
      case "server-stop":
        this.keys.clear();
        this.live = false;
        return;
      case "recovery-began":
        this.held = ev.held;
        return;
      case "recovery-finished":
        this.settled();
        this.held = false;
        for (const k of [...this.keys.keys()].sort()) this.process(k, false);
        return;
      case "up": {
        this.settled();
        const s = this.key(ev.key);
        if (ev.kind === "request") {
          if (s.requested.some((r) => r.c === ev.c)) disallow(`c${ev.c} has a second request queued on ${ev.key}`);
          if (ev.noQueue) {
            let admits = !this.held && s.requested.length === 0 && s.invalidated.size === 0;
            for (const [c, g] of s.granted) if (c !== ev.c && !compatX(g, ev.mode)) admits = false;
            if (!admits) {
              s.expected.push({ kind: "refuse", c: ev.c, key: ev.key, mode: "null", old: "null" });
              return;
            }
            if (s.granted.get(ev.c) === "null") s.granted.delete(ev.c);
          }
          s.requested.push({ c: ev.c, mode: ev.mode, noQueue: ev.noQueue });
          this.process(ev.key, false);
          return;
        }
        if (!s.invalidated.has(ev.c)) disallow(`c${ev.c} answers an invalidation on ${ev.key} the server did not send`);
        const held = s.granted.get(ev.c)!;
        if (!(ev.mode === "null" || (ev.mode === "read" && held === "write")))
          disallow(`c${ev.c} answers ${ev.key} with ${ev.mode}, not a downgrade of ${held}`);
        s.invalidated.delete(ev.c);
        s.granted.delete(ev.c); // back to the tail of granted, as the server's list does
        if (ev.mode !== "null") s.granted.set(ev.c, ev.mode);
        this.process(ev.key, false);
        return;
      }
      case "recover":
        this.settled();
        if (!this.held) disallow(`c${ev.c}'s recovery batch arrives while the lock table does not hold`);
        if (this.gone.has(ev.c)) disallow(`c${ev.c}'s recovery batch re-creates entries after its farewell (B5)`);
        for (const l of ev.locks) {
          const s = this.key(l.key);
          if (s.granted.has(ev.c)) disallow(`c${ev.c} reports ${l.key} twice`);
          for (const [c, g] of s.granted) {
            if (!compatX(g, l.mode)) disallow(`c${ev.c} reports ${l.key} as ${l.mode}, which conflicts with c${c}'s ${g}`);
          }
          s.granted.set(ev.c, l.mode);
          if (BigInt(l.seq) > this.seqFloor) this.seqFloor = BigInt(l.seq);
        }
        return;
      case "gone":
        this.settled();
        this.gone.add(ev.c);
        this.clientGone(ev.c);
        return;
      case "down": {
        const s = this.key(ev.key);
        const head = s.requested[0];
        if (ev.kind === "refuse" && s.expected.length === 0 && head?.c === ev.c && head.noQueue && canWrite(head.mode)) {
          // admitted by the model, refused by the server for lack of a fencing token: not queued after all
          s.requested.shift();
          s.seqWait = false;
          return;
        }
        if (s.expected.length === 0 && s.seqWait) {
          this.process(ev.key, true); // the token arrived
        }
        const next = s.expected[0];
        if (next === undefined && ev.kind === "refuse" && canWrite(ev.mode)) return;
        if (
          next !== undefined &&
          next.kind === "refuse" &&
          ev.kind === "refuse" &&
          next.c === ev.c
        ) {
          s.expected.shift();
          return;
        }
        if (next === undefined) {
          if (this.held) disallow(`${ev.kind} to c${ev.c} on ${ev.key} while recovery holds the lock table`);
          if (s.invalidated.size > 0)
            disallow(`${ev.kind} to c${ev.c} on ${ev.key} while an invalidation of that key is outstanding`);
          disallow(`${ev.kind} to c${ev.c} on ${ev.key} (${ev.old}->${ev.mode}), which no request or answer called for`);
        }
        if (next.kind !== ev.kind || next.c !== ev.c || next.mode !== ev.mode || next.old !== ev.old) {
          disallow(
            `${ev.kind} to c${ev.c} on ${ev.key} (${ev.old}->${ev.mode}); the model's next step on that key is ` +
              `${next.kind} to c${next.c} (${next.old}->${next.mode})`,
          );
        }
        s.expected.shift();
        if (ev.kind === "grant") {
          const seq = BigInt(ev.seq);
          if (canWrite(ev.mode)) {
            if (seq <= this.seqFloor) disallow(`write token ${seq} on ${ev.key} is not above ${this.seqFloor}`);
            this.seqFloor = seq;
          } else if (seq !== 0n) disallow(`a ${ev.mode} grant carries token ${seq}`);
        }
        return;
      }
      case "req-sent": {
        const id = `${ev.c}|${ev.key}`;
        if (this.requests.has(id)) disallow(`c${ev.c} sends a second request on ${ev.key}`);
        this.requests.set(id, ev.mode);
        return;
      }
      case "delivered": {
        const id = `${ev.c}|${ev.key}`;
        const asked = this.requests.get(id);
        if (asked === undefined) disallow(`c${ev.c} gets a ${ev.kind} on ${ev.key} with no request outstanding`);
        if (ev.kind === "grant" && asked !== ev.mode) disallow(`c${ev.c} asked for ${asked} on ${ev.key} and got ${ev.mode}`);
        this.requests.delete(id);
        if (ev.kind === "grant") this.cached.set(id, ev.mode);
        return;
      }
      case "inv-started": {
        const id = `${ev.c}|${ev.key}`;
        if (this.invStarted.has(id)) disallow(`c${ev.c} starts a second invalidation of ${ev.key} before answering the first`);
        this.invStarted.add(id);
        this.cached.set(id, lowered(this.cached.get(id) ?? "null", ev.to));
        return;
      }
      case "inv-answered": {
        for (const h of this.handles.get(ev.c)?.values() ?? []) {
          if (h.key === ev.key && !satisfies(ev.mode, h.mode))
            disallow(`c${ev.c} answers the invalidation of ${ev.key} to ${ev.mode} while it holds a ${h.mode} handle`);
        }
        const id = `${ev.c}|${ev.key}`;
        if (!this.invStarted.delete(id)) this.cached.set(id, lowered(this.cached.get(id) ?? "null", ev.mode));
        return;
      }
      case "handle": {
        const cached = this.cached.get(`${ev.c}|${ev.key}`) ?? "null";
        if (!satisfies(cached, ev.mode)) disallow(`c${ev.c} gets a ${ev.mode} handle on ${ev.key} under cached mode ${cached}`);
        for (const [c, hs] of this.handles) {
          if (this.out.has(c)) continue;
          for (const h of hs.values()) {
            if (h.key === ev.key && !share(h.mode, ev.mode))
              disallow(`c${ev.c} gets a ${ev.mode} handle on ${ev.key} while c${c} holds a ${h.mode} handle`);
          }
        }
        let hs = this.handles.get(ev.c);
        if (hs === undefined) this.handles.set(ev.c, (hs = new Map<number, { key: string; mode: Mode }>()));
        hs.set(ev.id, { key: ev.key, mode: ev.mode });
        return;
      }
      case "release":
        this.handles.get(ev.c)?.delete(ev.id);
        return;
      case "client-out":
        this.out.add(ev.c);
        this.handles.delete(ev.c);
        for (const id of this.invStarted) if (id.startsWith(`${ev.c}|`)) this.invStarted.delete(id);
        return;
    }
  }
}

/** Replays `events` against the model; the verdict names the first step it does not allow. */
export function checkTrace(events: readonly TraceEvent[]): TraceVerdict {
  const model = new Model();
  for (let i = 0; i < events.length; i++) {
    try {
      model.step(events[i]!);
    } catch (error) {
      if (error instanceof Disallowed) return { ok: false, events: events.length, step: i + 1, event: events[i]!, reason: error.message };
      throw error;
    }
  }
  return { ok: true, events: events.length };
}

export function formatVerdict(v: TraceVerdict): string {
  return v.ok
    ? `ok, ${v.events} events`
    : `step ${v.step} of ${v.events} is not allowed by the model: ${v.reason}\n  event: ${JSON.stringify(v.event)}`;
}

function main(): void {
  const file = process.argv[2];
  if (file === undefined) {
    console.error("usage: tsx model/trace-check.ts TRACE.jsonl   (write one with npm run sim -- --seed S --trace FILE)");
    process.exit(2);
  }
  const events = readFileSync(file, "utf8")
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line) as TraceEvent);
  const verdict = checkTrace(events);
  console.log(formatVerdict(verdict));
  process.exitCode = verdict.ok ? 0 : 1;
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) main();
