// Transcript tests of the fence tracker (reference §8.1–8.2, §5.6, B37, B38). Each file under
// test/transcripts/fencing/ runs against a fresh FenceTracker.
//
// Commands (clients are single capital letters: A is rid 1, B rid 2, ...):
//   start A client_recovery 10.0.0.1:7000 [pid=42] at=100   prints "created" or "exists (nothing to do)"
//   fenced A | error A <reason text...>                       agent outcomes
//   next                                                      the oldest finished request, or "(none)"
//   overdue now=30100 timeout=30000                           running requests past their timeout
//   free A | stop
//   has A | list
// A request prints as `A client_recovery 10.0.0.1:7000 pid=42 started=100 running` (+ `error="..."`).
import { fileURLToPath } from "node:url";
import { clientOf, ridOf, transcriptTests, type CommandHandler } from "../support/transcript.js";
import { FenceTracker, type FenceReason, type FenceRequest } from "../../src/core/fencing.js";

const TRANSCRIPTS_DIR = fileURLToPath(new URL("../transcripts/fencing/", import.meta.url));

function numberField(args: string[], name: string): number | undefined {
  const arg = args.find((a) => a.startsWith(`${name}=`));
  return arg === undefined ? undefined : Number(arg.slice(name.length + 1));
}

function describe(request: FenceRequest): string {
  const pid = request.pid === undefined ? "" : ` pid=${request.pid}`;
  const error = request.error === undefined ? "" : ` error=${JSON.stringify(request.error)}`;
  return `${clientOf(request.rid)} ${request.reason} ${request.address}${pid} started=${request.startedAtMs} ${request.state}${error}`;
}

function makeHandler(): CommandHandler {
  const fences = new FenceTracker();
  return (command, args) => {
    switch (command) {
      case "start": {
        const [client, reason, address, ...rest] = args;
        const pid = numberField(rest, "pid");
        const at = numberField(rest, "at");
        if (address === undefined || at === undefined) throw new Error("start needs an address and at=");
        const created = fences.start(
          {
            rid: ridOf(client),
            address,
            reason: reason as FenceReason,
            ...(pid === undefined ? {} : { pid }),
          },
          at,
        );
        return [created ? "created" : "exists (nothing to do)"];
      }
      case "fenced":
        fences.onFenced(ridOf(args[0]));
        return [];
      case "error":
        fences.onError(ridOf(args[0]), args.slice(1).join(" "));
        return [];
      case "next": {
        const request = fences.next();
        return [request === undefined ? "(none)" : describe(request)];
      }
      case "overdue": {
        const now = numberField(args, "now");
        const timeout = numberField(args, "timeout");
        if (now === undefined || timeout === undefined) throw new Error("overdue needs now= and timeout=");
        const late = fences.overdue(now, timeout);
        return late.length === 0 ? ["(none)"] : late.map(describe);
      }
      case "free":
        fences.free(ridOf(args[0]));
        return [];
      case "stop":
        fences.stop();
        return [];
      case "has":
        return [String(fences.has(ridOf(args[0])))];
      case "list": {
        const all = fences.list();
        return all.length === 0 ? ["(none)"] : all.map(describe);
      }
      default:
        throw new Error(`unknown command ${command}`);
    }
  };
}

transcriptTests("fencing", TRANSCRIPTS_DIR, makeHandler);
