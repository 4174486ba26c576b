// Transcript tests of the election machine (src/core/election.ts); scripts live in
// test/transcripts/election/*.txt. KEYLOCK_REWRITE=1 regenerates the expected lines.
//
// Commands (times are absolute virtual milliseconds; the clock only moves forward):
//   config slots=0,1,2 self=0 [heartbeat=MS] [start-term=N] [live-leader=yes|no] [jitter=J,J,...]
//                                     a fresh machine; election timeouts are 250 + J ms, J cycling
//                                     through the list (default 0)
//   begin [T]                         the service starts (at T, default 0)
//   tick T                            the clock moves to T and the wait for a message times out
//   at T                              the clock moves to T (nothing happens)
//   recv FROM TYPE term=N             a message (request_vote | vote | heartbeat | resignation) arrives now
//   server STATUS                     our lock server reports starting | up | stopping | down
//   elect TERM ok                     the conditional ELECT for TERM was written and no other slot tied
//   elect TERM tie [greatest=N]       written, but another slot's ELECT has the same term
//   elect TERM refused greatest=N     the store refused: some slot records a term above TERM
//   shutdown                          graceful exit
//   status | deadline                 print the machine's state (and messages dropped for their term,
//                                     if any) | when it wants the next tick
// Printed, one line per effect, in order:
//   persist KIND term=N | persist-elect term=N | send SLOT TYPE term=N | broadcast TYPE term=N
//   start-server term=N | serve term=N | stop-server term=N | status ROLE term=N leader=S server=ST
//   log MESSAGE | exit
import { fileURLToPath } from "node:url";
import {
  Election,
  QUORUM_MESSAGE_TYPES,
  type ElectionEffect,
  type ElectOutcome,
  type QuorumMessageType,
  type ServerStatus,
} from "../../src/core/election.js";
import { transcriptTests, type CommandHandler } from "../support/transcript.js";

const DIR = fileURLToPath(new URL("../transcripts/election", import.meta.url));

function options(args: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const arg of args) {
    const [name, value] = arg.split("=");
    if (name === undefined || value === undefined) throw new Error(`expected name=value, got ${arg}`);
    out.set(name, value);
  }
  return out;
}

function int(text: string | undefined, what: string): number {
  const n = Number(text);
  if (text === undefined || !Number.isInteger(n)) throw new Error(`bad ${what}: ${String(text)}`);
  return n;
}

function term(text: string | undefined): bigint {
  const match = /^(?:term=)?(\d+)$/.exec(text ?? "");
  if (!match) throw new Error(`bad term ${String(text)}`);
  return BigInt(match[1]!);
}

function messageType(text: string | undefined): QuorumMessageType {
  const upper = (text ?? "").toUpperCase() as QuorumMessageType;
  if (!QUORUM_MESSAGE_TYPES.includes(upper)) throw new Error(`bad message type ${String(text)}`);
  return upper;
}

function serverStatus(text: string | undefined): ServerStatus {
  const upper = (text ?? "").toUpperCase();
  if (upper !== "STARTING" && upper !== "UP" && upper !== "STOPPING" && upper !== "DOWN") {
    throw new Error(`bad server status ${String(text)}`);
  }
  return upper;
}

function formatEffect(effect: ElectionEffect): string {
  switch (effect.type) {
    case "persist":
      return `persist ${effect.kind} term=${effect.term}`;
    case "persist-elect":
      return `persist-elect term=${effect.term}`;
    case "send":
      return `send ${effect.to} ${effect.message.type.toLowerCase()} term=${effect.message.term}`;
    case "broadcast":
      return `broadcast ${effect.message.type.toLowerCase()} term=${effect.message.term}`;
    case "start-server":
    case "serve":
    case "stop-server":
      return `${effect.type} term=${effect.term}`;
    case "status": {
      const s = effect.status;
      return `status ${s.role} term=${s.term} leader=${s.leader ?? "-"} server=${s.serverStatus}${s.ended ? " ended" : ""}`;
    }
    case "log":
      return `log ${effect.message}`;
    case "exit":
      return "exit";
  }
}

function makeHandler(): CommandHandler {
  let machine: Election | null = null;
  let now = 0;
  const need = (): Election => {
    if (machine === null) throw new Error("no machine: start with config");
    return machine;
  };
  const moveTo = (text: string | undefined): void => {
    const t = int(text, "time");
    if (t < now) throw new Error(`time ${t} is before ${now}`);
    now = t;
  };
  return (command, args) => {
    let effects: ElectionEffect[];
    switch (command) {
      case "config": {
        const o = options(args);
        const jitters = (o.get("jitter") ?? "0").split(",").map((j) => int(j, "jitter"));
        let draw = 0;
        machine = new Election({
          slot: int(o.get("self") ?? "0", "self"),
          slots: (o.get("slots") ?? "0").split(",").map((s) => int(s, "slot")),
          heartbeatTimeoutMs: int(o.get("heartbeat") ?? "10000", "heartbeat"),
          startTerm: BigInt(o.get("start-term") ?? "0"),
          liveLeaderRecorded: o.get("live-leader") === "yes",
          random: () => jitters[draw++ % jitters.length]! / 100,
        });
        now = 0;
        return [];
      }
      case "begin":
        if (args[0] !== undefined) moveTo(args[0]);
        effects = need().begin(now);
        break;
      case "tick":
        moveTo(args[0]);
        effects = need().tick(now);
        break;
      case "at":
        moveTo(args[0]);
        return [];
      case "recv":
        effects = need().receive({ from: int(args[0], "slot"), type: messageType(args[1]), term: term(args[2]) }, now);
        break;
      case "server":
        effects = need().serverStatus(serverStatus(args[0]), now);
        break;
      case "elect": {
        const t = term(args[0]);
        const o = options(args.slice(2));
        const greatestTerm = BigInt(o.get("greatest") ?? String(t));
        let outcome: ElectOutcome;
        if (args[1] === "ok") outcome = { ok: true };
        else if (args[1] === "tie") outcome = { ok: false, written: true, greatestTerm, reason: `another slot also won term ${t}` };
        else if (args[1] === "refused") outcome = { ok: false, written: false, greatestTerm, reason: `a slot records a term above ${t}` };
        else throw new Error(`elect needs ok | tie | refused, got ${String(args[1])}`);
        effects = need().electWritten(t, outcome, now);
        break;
      }
      case "shutdown":
        effects = need().shutdown(now);
        break;
      case "status": {
        const s = need().status();
        return [
          `${s.role} term=${s.term} leader=${s.leader ?? "-"} voted=${s.votedFor ?? "-"} votes=${s.votes.join(",") || "-"}/${s.votesNeeded} server=${s.serverStatus} start-term=${s.serverStartTerm} event=${s.serverEvent ?? "-"}`,
          `peers ${s.peers.map((p) => `${p.slot}:${p.role}`).join(" ")}`,
          ...(s.dropped["term-range"] + s.dropped["term-jump"] > 0
            ? [`dropped term-range=${s.dropped["term-range"]} term-jump=${s.dropped["term-jump"]}`]
            : []),
          ...(s.heartbeatGaps.length > 0
            ? [`gaps ${s.heartbeatGaps.map((g) => `${g.seconds}s×${g.count}`).join(" ")} max=${s.heartbeatGapMaxMs}ms`]
            : []),
        ];
      }
      case "deadline":
        return [`deadline ${need().deadlineMs ?? "none"}`];
      default:
        throw new Error(`unknown command ${command}`);
    }
    return effects.map(formatEffect);
  };
}

transcriptTests("election", DIR, makeHandler);
