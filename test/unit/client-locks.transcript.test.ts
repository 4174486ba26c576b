// Transcript tests of the client lock manager (src/core/client-locks.ts); scripts live in
// test/transcripts/client-locks/*.txt. KEYLOCK_REWRITE=1 regenerates the expected lines.
//
// Commands (keys are text; modes null|read|write|write_only; "a->b" is old->new mode):
//   config idle=N                      fresh manager with idleLockLimit N (default 1000)
//   acquire ID KEY MODE [nonblock]     a caller asks for a handle; ID names the waiter and the handle
//   release ID | abort ID
//   grant KEY OLD->NEW [seq=N]         the server answers our outstanding request; a non-null grant is
//                                      grant #1, #2, ... in script order, with the proof a server of term 1
//                                      and a grant-tag key of zeros gives it (we are rid 1)
//   refuse KEY                         the server refuses our no-queue request (EAGAIN)
//   invalidate REQ KEY OLD->NEW        the server (request id REQ) asks us to downgrade
//   done N                             the application callback of invalidation #N completed
//   recover AFTER|- MAX                one recovery batch after key AFTER (- = from the first)
//   shutdown [CODE] | reset [CODE]     CODE is ESHUTDOWN (default) or EFENCED
//   newserver                         a greeting reached a new server (onNewServer)
//   view KEY | locks
// Printed, one line per effect, in order:
//   send-request KEY OLD->NEW [noqueue] | respond REQ KEY OLD->NEW | invalidate #N KEY FROM->TO
//   granted ID KEY MODE seq=N | failed ID KEY CODE (reason)
// and by recover, one line per reported lock: lock KEY MODE seq=N [grant#G], grant#G naming the grant
// whose proof it carries (none: zeros), and "(proof does not verify)" after a non-null report whose tag
// does not cover its mode.
import { fileURLToPath } from "node:url";
import { ClientLocks, type ClientLockEffect } from "../../src/core/client-locks.js";
import { GrantTags } from "../../src/core/grant-tags.js";
import type { RecoveredLock } from "../../src/core/lock-messages.js";
import { keyFromText, keyToText, type Key } from "../../src/core/keys.js";
import { isLockMode, type LockMode } from "../../src/core/modes.js";
import { transcriptTests, type CommandHandler } from "../support/transcript.js";

const DIR = fileURLToPath(new URL("../transcripts/client-locks", import.meta.url));

function mode(text: string | undefined): LockMode {
  if (!isLockMode(text)) throw new Error(`bad mode ${String(text)}`);
  return text;
}

function userMode(text: string | undefined): Exclude<LockMode, "null"> {
  const m = mode(text);
  if (m === "null") throw new Error("acquire needs read, write or write_only");
  return m;
}

function transition(text: string | undefined): { oldMode: LockMode; newMode: LockMode } {
  const [oldMode, newMode] = (text ?? "").split("->");
  return { oldMode: mode(oldMode), newMode: mode(newMode) };
}

function int(text: string | undefined): number {
  const n = Number(text);
  if (!Number.isInteger(n)) throw new Error(`bad number ${String(text)}`);
  return n;
}

function key(text: string | undefined): Key {
  if (text === undefined) throw new Error("missing key");
  return keyFromText(text);
}

function stopCode(text: string | undefined): "ESHUTDOWN" | "EFENCED" {
  if (text === undefined || text === "ESHUTDOWN") return "ESHUTDOWN";
  if (text === "EFENCED") return "EFENCED";
  throw new Error(`bad code ${text}`);
}

const RID = 1n;
const TAGS = new GrantTags(new Uint8Array(16));

function formatReport(lock: RecoveredLock): string {
  const proof =
    lock.grantNo === 0
      ? ""
      : ` grant#${lock.grantNo}${lock.grantTerm === 1n ? "" : ` term=${lock.grantTerm}`}`;
  const unverified = lock.mode !== "null" && !TAGS.verify(RID, lock) ? " (proof does not verify)" : "";
  return `lock ${keyToText(lock.key)} ${lock.mode} seq=${lock.writeSeq}${proof}${unverified}`;
}

function formatEffect(effect: ClientLockEffect): string {
  switch (effect.type) {
    case "send-request": {
      const r = effect.request;
      return `send-request ${keyToText(r.key)} ${r.oldMode}->${r.newMode}${r.noQueue ? " noqueue" : ""}`;
    }
    case "send-invalidate-response": {
      const r = effect.response;
      return `respond ${effect.requestId} ${keyToText(r.key)} ${r.oldMode}->${r.newMode}`;
    }
    case "invalidate":
      return `invalidate #${effect.invalidationId} ${keyToText(effect.key)} ${effect.from}->${effect.to}`;
    case "granted":
      return `granted ${effect.waiterId} ${keyToText(effect.key)} ${effect.mode} seq=${effect.writeSeq}`;
    case "failed":
      return `failed ${effect.waiterId} ${keyToText(effect.key)} ${effect.code} (${effect.reason})`;
  }
}

function makeHandler(): CommandHandler {
  let locks = new ClientLocks({ idleLockLimit: 1000 });
  let grants = 0;
  return (command, args) => {
    switch (command) {
      case "config": {
        const limit = /^idle=(\d+)$/.exec(args[0] ?? "");
        if (limit === null) throw new Error("usage: config idle=N");
        locks = new ClientLocks({ idleLockLimit: Number(limit[1]) });
        return [];
      }
      case "acquire":
        return locks
          .acquire(int(args[0]), key(args[1]), userMode(args[2]), { nonblock: args[3] === "nonblock" })
          .map(formatEffect);
      case "release":
        return locks.release(int(args[0])).map(formatEffect);
      case "abort":
        return locks.abort(int(args[0])).map(formatEffect);
      case "grant": {
        const seq = /^seq=(\d+)$/.exec(args[2] ?? "seq=0");
        if (seq === null) throw new Error("usage: grant KEY OLD->NEW [seq=N]");
        const k = key(args[0]);
        const { oldMode, newMode } = transition(args[1]);
        const writeSeq = BigInt(seq[1]!);
        if (newMode === "null")
          return locks
            .onGrant({ key: k, oldMode, newMode, writeSeq, grantTerm: 0n, grantNo: 0, grantTag: 0 })
            .map(formatEffect);
        const grantNo = ++grants;
        const grantTag = TAGS.tag(RID, k, newMode, 1n, grantNo);
        return locks
          .onGrant({ key: k, oldMode, newMode, writeSeq, grantTerm: 1n, grantNo, grantTag })
          .map(formatEffect);
      }
      case "refuse":
        return locks.onRefuse(key(args[0]), "EAGAIN").map(formatEffect);
      case "invalidate":
        return locks
          .onInvalidate(int(args[0]), { key: key(args[1]), ...transition(args[2]) })
          .map(formatEffect);
      case "done":
        return locks.invalidationDone(int(args[0])).map(formatEffect);
      case "recover": {
        const batch = locks.recoverBatch(args[0] === "-" ? null : key(args[0]), int(args[1]));
        if (batch.length === 0) return ["(empty batch: recovery done)"];
        return batch.map(formatReport);
      }
      case "shutdown":
        return locks.shutdown(stopCode(args[0])).map(formatEffect);
      case "reset":
        return locks.reset(stopCode(args[0])).map(formatEffect);
      case "newserver":
        return locks.onNewServer().map(formatEffect);
      case "view": {
        const v = locks.view(key(args[0]));
        if (v === undefined) return [`${args[0]} (no lock object)`];
        const u = v.users;
        return [
          `${args[0]} mode=${v.mode} seq=${v.writeSeq} users(r/w/wo)=${u.read}/${u.write}/${u.write_only} ` +
            `waiters=${v.waiters} request=${v.requestPending ?? "none"} invalidations=${v.invalidations}` +
            (v.idle ? " idle" : ""),
        ];
      }
      case "locks":
        return [`locks=${locks.lockCount}`];
      default:
        throw new Error(`unknown command ${command}`);
    }
  };
}

transcriptTests("client locks", DIR, makeHandler);
