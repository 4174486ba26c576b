// Transcript tests of the server machine (core/server-machine.ts): greetings, the client registry, record
// writes and their answers, farewell / fence / reclaim order, recovery and reconnect deadlines. Each file
// under test/transcripts/server/ runs against a fresh ServerMachine (term 5, reconnect 2000 ms, recovery
// 3000 ms).
//
// Commands (clients are single capital letters: A is rid 1, B rid 2, ...):
//   start [A B ...]             start with durable records for these clients (keys rA/cA, address hA)
//   greet A [term=N] [conn=N] [farewell] [bad-proof]
//                               a greeting (ids g1, g2, ... in order), lastServerTerm N (default 0), on
//                               connection N (default 1); the driver's identity check is made here as the
//                               real one: under machine.keysOf(A) when it knows keys, else the claim key, with
//                               fresh keys rA<n>/cA for a first greeting; `bad-proof` fails it
//   persisted A | deleted A | write-failed A      the answer to A's record write in flight
//   disconnect A [conn=N]       A's connection N (default 1) closed
//   farewell A ID               A's farewell request ID
//   locks-recovered A           A's empty recovery batch
//   stuck A                     A's invalidation timed out (or its session overflowed)
//   timeout recovery | timeout reconnect A
//   fenced A | fence-failed A   the fence agent's outcome for A
//   stop
//   state                       recovering, pending, the sessions and the fences
// Every command prints the effects, one a line.
import { fileURLToPath } from "node:url";
import { clientOf, ridOf, transcriptTests, type CommandHandler } from "../support/transcript.js";
import { ServerMachine, type ServerEffect, type ServerInput, type TimerId } from "../../src/core/server-machine.js";

const TRANSCRIPTS_DIR = fileURLToPath(new URL("../transcripts/server/", import.meta.url));

function timerName(timer: TimerId): string {
  return timer === "recovery" ? "recovery" : `reconnect ${clientOf(BigInt(timer.slice("reconnect:".length)))}`;
}

/** Rids in hex (as in log lines) become client letters, so the transcripts read. */
function readable(text: string): string {
  return text.replace(/\b0{8,}[0-9a-f]+\b/g, (hex) => clientOf(BigInt(`0x${hex}`)));
}

export function formatEffect(effect: ServerEffect): string {
  switch (effect.type) {
    case "refuse-greeting":
      return `refuse g${effect.greeting} ${effect.error}: ${effect.reason}`;
    case "accept-greeting": {
      const flags = [effect.continuesPredecessor ? "continuing" : "", effect.issue ? "issue-secret" : "", effect.requestLocks ? "request-locks" : ""];
      return [`accept g${effect.greeting} ${clientOf(effect.rid)} ${effect.how}`, ...flags.filter((f) => f !== "")].join(" ");
    }
    case "drop-session":
      return `drop-session ${clientOf(effect.rid)} (${effect.reason})`;
    case "forget-session":
      return `forget-session ${clientOf(effect.rid)}`;
    case "persist-record":
      return `persist-record ${clientOf(effect.rid)} keys=${effect.keys.resumeKey}/${effect.keys.claimKey} address=${effect.address}`;
    case "delete-record":
      return `delete-record ${clientOf(effect.rid)} (${effect.purpose})`;
    case "hold-locks":
    case "resume-locks":
      return effect.type;
    case "forget-locks":
      return `forget-locks ${clientOf(effect.rid)}`;
    case "answer-farewell":
      return `answer-farewell ${clientOf(effect.rid)} ids=${effect.ids.join(",")}`;
    case "set-timer":
      return `set-timer ${timerName(effect.timer)} ${effect.ms}ms`;
    case "clear-timer":
      return `clear-timer ${timerName(effect.timer)}`;
    case "fence":
      return `fence ${clientOf(effect.rid)} ${effect.reason} at ${effect.address}${effect.owner === null ? "" : ` pid=${effect.owner.pid}`}`;
    case "fatal":
      return `fatal: ${readable(effect.reason)}`;
    case "log":
      return `log ${effect.level}: ${readable(effect.line)}`;
    case "refused-input":
      return `refused-input ${effect.input}: ${readable(effect.reason)}`;
  }
}

function flag(args: string[], name: string, fallback: number): number {
  const arg = args.find((a) => a.startsWith(`${name}=`));
  return arg === undefined ? fallback : Number(arg.slice(name.length + 1));
}

export function makeServerMachineHandler(): CommandHandler {
  const machine = new ServerMachine({ term: 5n, reconnectTimeoutMs: 2000, recoveryTimeoutMs: 3000 });
  let greetings = 0;
  let issued = 0;
  let nowMs = 0;
  const print = (effects: ServerEffect[]): string[] => effects.map(formatEffect);
  const input = (i: ServerInput): string[] => print(machine.input(i));
  return (command, args) => {
    nowMs += 10;
    switch (command) {
      case "start":
        return print(
          machine.start(
            args.map((c) => ({ rid: ridOf(c), address: `h${c}`, pid: 100 + Number(ridOf(c)), pidStart: "t0", resumeKey: `r${c}`, claimKey: `c${c}` })),
          ),
        );
      case "greet": {
        const letter = args[0]!;
        const rid = ridOf(letter);
        const lastServerTerm = BigInt(flag(args, "term", 0));
        const ok = !args.includes("bad-proof");
        const known = machine.keysOf(rid);
        const identity =
          known !== null
            ? { kind: "known" as const, keys: known, ok }
            : { kind: "unknown" as const, claimOk: ok, fresh: ok && lastServerTerm === 0n ? { resumeKey: `r${letter}${++issued}`, claimKey: `c${letter}` } : null };
        return input({
          type: "greeting",
          greeting: ++greetings,
          conn: flag(args, "conn", 1),
          rid,
          name: letter.toLowerCase(),
          address: `h${letter}`,
          farewell: args.includes("farewell"),
          lastServerTerm,
          owner: null,
          identity,
          nowMs,
        });
      }
      case "persisted":
        return input({ type: "record-persisted", rid: ridOf(args[0]) });
      case "deleted":
        return input({ type: "record-deleted", rid: ridOf(args[0]) });
      case "write-failed":
        return input({ type: "record-failed", rid: ridOf(args[0]), error: "the store is down" });
      case "disconnect":
        return input({ type: "disconnected", rid: ridOf(args[0]), conn: flag(args, "conn", 1), reason: "peer closed" });
      case "farewell":
        return input({ type: "farewell", rid: ridOf(args[0]), id: Number(args[1]) });
      case "locks-recovered":
        return input({ type: "locks-recovered", rid: ridOf(args[0]) });
      case "stuck":
        return input({ type: "client-stuck", rid: ridOf(args[0]) });
      case "timeout":
        return input({ type: "timeout", timer: args[0] === "recovery" ? "recovery" : `reconnect:${ridOf(args[1])}` });
      case "fenced":
        return input({ type: "fence-done", rid: ridOf(args[0]) });
      case "fence-failed":
        return input({ type: "fence-failed", rid: ridOf(args[0]), error: "the agent failed" });
      case "stop":
        return input({ type: "stop" });
      case "state": {
        const sessions = machine
          .liveSessions()
          .sort((a, b) => (a.rid < b.rid ? -1 : 1))
          .map((s) => `${clientOf(s.rid)}(conn=${s.conn ?? "-"}${s.leaving ? " leaving" : ""})`);
        const fences = machine.fences().map((f) => `${clientOf(f.rid)}:${f.state}`);
        return [
          `recovering=${machine.recovering} pending=${machine.recoveryPending} sessions=${sessions.join(" ") || "(none)"} fences=${fences.join(" ") || "(none)"}`,
        ];
      }
      default:
        throw new Error(`unknown command ${command}`);
    }
  };
}

transcriptTests("server machine", TRANSCRIPTS_DIR, makeServerMachineHandler);
