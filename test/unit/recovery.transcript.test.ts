// Transcript tests of the recovery tracker (reference §5.1–5.3, §5.6). Each file under
// test/transcripts/recovery/ runs against a fresh RecoveryTracker.
//
// Commands (clients are single capital letters: A is rid 1, B rid 2, ...; parts are greeting, locks, or
// both as "greeting,locks"):
//   prepare A greeting,locks     prepare(rid, parts)
//   begin                        prints "finished" when recovery finished at once, else "waiting"
//   finish A locks               prints "finished" when this call finished recovery, else "-"
//   pending A [locks]            isPending(rid[, part])
//   rids                         pendingRids(), or "(none)"
//   state                        begun, finished, how many rids are pending
//   shutdown
import { fileURLToPath } from "node:url";
import { clientOf, ridOf, transcriptTests, type CommandHandler } from "../support/transcript.js";
import { RecoveryTracker, type RecoveryPart } from "../../src/core/recovery.js";

const TRANSCRIPTS_DIR = fileURLToPath(new URL("../transcripts/recovery/", import.meta.url));

function partsOf(text: string | undefined): RecoveryPart[] {
  if (text === undefined) throw new Error("missing parts");
  if (text === "none") return [];
  return text.split(",").map((part) => {
    if (part !== "greeting" && part !== "locks") throw new Error(`unknown part ${part}`);
    return part;
  });
}

function makeHandler(): CommandHandler {
  const tracker = new RecoveryTracker();
  return (command, args) => {
    switch (command) {
      case "prepare":
        tracker.prepare(ridOf(args[0]), partsOf(args[1]));
        return [];
      case "begin":
        return [tracker.begin() ? "finished" : "waiting"];
      case "finish":
        return [tracker.finish(ridOf(args[0]), partsOf(args[1])) ? "finished" : "-"];
      case "pending": {
        const part = args[1] === undefined ? undefined : partsOf(args[1])[0];
        return [String(tracker.isPending(ridOf(args[0]), part))];
      }
      case "rids": {
        const rids = tracker.pendingRids();
        return [rids.length === 0 ? "(none)" : rids.map(clientOf).join(" ")];
      }
      case "state":
        return [`begun=${tracker.begun} finished=${tracker.finished} pending=${tracker.pendingCount}`];
      case "shutdown":
        tracker.shutdown();
        return [];
      default:
        throw new Error(`unknown command ${command}`);
    }
  };
}

transcriptTests("recovery", TRANSCRIPTS_DIR, makeHandler);
