// Transcript tests of the server lock table (reference §3, §5.4–5.5; DESIGN §4). Each file under
// test/transcripts/lock-server/ runs against a fresh LockServer whose write seq source starts at 1 and
// which refuses recovered write seqs above 1000 (its "durable high-water mark").
//
// Commands (clients are single capital letters: A is rid 1, B rid 2, ...; request ids count up per client):
//   request A k1 write [nonblock]        A asks for write on k1 (noQueue when "nonblock")
//   respond A k1 read                    A finished the invalidation on k1 and now holds read
//   recover A k1 write seq=7 k2 null     recovery batch from A: (key mode [seq=N])... (seq defaults to 0);
//                                        reports carry no grant proof (zeros): a conflicting one loses
//   gone A                               farewell / reclaim of A
//   hold | resume                        recovery gate
//   seqs N | seqs all                    the write seq source has N more tokens (or no limit) from now on;
//                                        prints what onWriteSeqsAvailable() then does (a reservation landed)
//   dump | stats | count                 the table, its counters, and keyCount / entryCount
// Printed effects: `grant A k1 null->write seq=1 id=1 #1` (seq shown when non-zero; #N the grant number of
// a non-null grant, whose term (1) and tag the harness checks: "(bad proof ...)" otherwise),
// `invalidate A k1 write->read`, `refuse B k1 EAGAIN id=2`, `protocol-error A: <message>`,
// `refuted A k1: <message>`. After every command the harness checks that keyCount and entryCount agree
// with dump(); a mismatch prints THROWS.
import { fileURLToPath } from "node:url";
import { clientOf, ridOf, transcriptTests, type CommandHandler } from "../support/transcript.js";
import { keyFromText, keyToText, type Key } from "../../src/core/keys.js";
import { LockServer, WriteSeqCounter, type LockServerEffect, type WriteSeqSource } from "../../src/core/lock-server.js";
import type { LockGrant, LockInvalidation, RecoveredLock, Rid } from "../../src/core/lock-messages.js";
import { GrantTags } from "../../src/core/grant-tags.js";
import type { LockMode } from "../../src/core/modes.js";

const TRANSCRIPTS_DIR = fileURLToPath(new URL("../transcripts/lock-server/", import.meta.url));

function keyOf(text: string | undefined): Key {
  if (text === undefined) throw new Error("missing key");
  return keyFromText(text);
}

/** Modes are passed through unchecked so that transcripts can send invalid ones. */
function modeOf(text: string | undefined): LockMode {
  if (text === undefined) throw new Error("missing mode");
  return text as LockMode;
}

/** What the server's default grant tags are: a key of zeros (its term is 1). */
const TAGS = new GrantTags(new Uint8Array(16));

/** ` #N` for a non-null grant, and what is wrong with its proof, if anything. */
function describeProof(rid: Rid, grant: LockGrant): string {
  const { key, newMode, grantTerm, grantNo, grantTag } = grant;
  const number = grantNo === 0 ? "" : ` #${grantNo}`;
  const right =
    newMode === "null"
      ? grantTerm === 0n && grantNo === 0 && grantTag === 0
      : grantTerm === 1n && grantTag === TAGS.tag(rid, key, newMode, 1n, grantNo);
  return right ? number : `${number} (bad proof: term=${grantTerm} tag=${grantTag})`;
}

function describeEffect(effect: LockServerEffect): string {
  switch (effect.type) {
    case "grant": {
      const { key, oldMode, newMode, writeSeq } = effect.grant;
      const seq = writeSeq === 0n ? "" : ` seq=${writeSeq}`;
      const proof = describeProof(effect.rid, effect.grant);
      const what = `${clientOf(effect.rid)} ${keyToText(key)} ${oldMode}->${newMode}`;
      return `grant ${what}${seq} id=${effect.requestId}${proof}`;
    }
    case "invalidate": {
      const { key, oldMode, newMode } = effect.invalidation;
      return `invalidate ${clientOf(effect.rid)} ${keyToText(key)} ${oldMode}->${newMode}`;
    }
    case "refuse":
      return `refuse ${clientOf(effect.rid)} ${keyToText(effect.key)} ${effect.code} id=${effect.requestId}`;
    case "protocol-error":
      return `protocol-error ${clientOf(effect.rid)}: ${effect.error.message}`;
    case "refuted":
      return `refuted ${clientOf(effect.rid)} ${keyToText(effect.key)}: ${effect.error.message}`;
  }
}

/** A counter with a budget of tokens (null = no limit), like a reserved block that can run out. */
class BudgetedWriteSeq implements WriteSeqSource {
  readonly counter = new WriteSeqCounter();
  budget: bigint | null = null;
  available(): boolean {
    return this.budget === null || this.budget > 0n;
  }
  next(): bigint {
    if (!this.available()) throw new Error("next() called while no write seq is available");
    if (this.budget !== null) this.budget -= 1n;
    return this.counter.next();
  }
  observe(seen: bigint): void {
    this.counter.observe(seen);
  }
}

function makeHandler(): CommandHandler {
  const seqs = new BudgetedWriteSeq();
  const server = new LockServer({ writeSeq: seqs, recoveredWriteSeqMax: 1000n });
  const requestIds = new Map<string, number>();
  /** What each client holds as far as the harness knows (for the informational oldMode fields). */
  const held = new Map<string, LockMode>();
  /** The last invalidation each (client, key) received, echoed back by `respond`. */
  const invalidations = new Map<string, LockInvalidation>();

  function track(effects: LockServerEffect[]): void {
    for (const effect of effects) {
      if (effect.type === "grant") held.set(`${effect.rid} ${effect.grant.key}`, effect.grant.newMode);
      if (effect.type === "invalidate")
        invalidations.set(`${effect.rid} ${effect.invalidation.key}`, effect.invalidation);
    }
  }

  function run(command: string, args: string[]): string[] {
    switch (command) {
      case "request": {
        const [client, keyText, modeText, ...flags] = args;
        const rid = ridOf(client);
        const key = keyOf(keyText);
        for (const flag of flags) if (flag !== "nonblock") throw new Error(`unknown request flag ${flag}`);
        const requestId = (requestIds.get(client!) ?? 0) + 1;
        requestIds.set(client!, requestId);
        const oldMode = held.get(`${rid} ${key}`) ?? "null";
        const effects = server.onRequest(rid, requestId, {
          key,
          oldMode,
          newMode: modeOf(modeText),
          noQueue: flags.includes("nonblock"),
        });
        track(effects);
        return effects.map(describeEffect);
      }
      case "respond": {
        const [client, keyText, modeText] = args;
        const rid = ridOf(client);
        const key = keyOf(keyText);
        const newMode = modeOf(modeText);
        const oldMode = invalidations.get(`${rid} ${key}`)?.oldMode ?? newMode;
        const effects = server.onInvalidateResponse(rid, { key, oldMode, newMode });
        if (!effects.some((e) => e.type === "protocol-error")) held.set(`${rid} ${key}`, newMode);
        track(effects);
        return effects.map(describeEffect);
      }
      case "recover": {
        const [client, ...rest] = args;
        const rid = ridOf(client);
        const locks: RecoveredLock[] = [];
        for (let i = 0; i < rest.length;) {
          const key = keyOf(rest[i++]);
          const mode = modeOf(rest[i++]);
          let writeSeq = 0n;
          if (rest[i]?.startsWith("seq=")) writeSeq = BigInt(rest[i++]!.slice(4));
          locks.push({ key, mode, writeSeq, grantTerm: 0n, grantNo: 0, grantTag: 0 });
          held.set(`${rid} ${key}`, mode);
        }
        return server.onRecoverBatch(rid, locks).map(describeEffect);
      }
      case "gone": {
        const effects = server.onClientGone(ridOf(args[0]));
        track(effects);
        return effects.map(describeEffect);
      }
      case "hold":
        server.holdForRecovery();
        return [];
      case "seqs": {
        const [amount] = args;
        seqs.budget = amount === "all" ? null : BigInt(amount ?? "0");
        const effects = server.onWriteSeqsAvailable();
        track(effects);
        return effects.map(describeEffect);
      }
      case "resume": {
        const effects = server.resumeAfterRecovery();
        track(effects);
        return effects.map(describeEffect);
      }
      case "dump": {
        const rows = server.dump();
        if (rows.length === 0) return ["(empty)"];
        return rows.map(
          (r) => `${keyToText(r.key)} ${clientOf(r.rid)} ${r.mode} ${r.state} id=${r.requestId}`,
        );
      }
      case "stats": {
        const rows = server.stats();
        if (rows.length === 0) return ["(empty)"];
        return rows.map(
          (s) =>
            `${keyToText(s.key)} requests=${s.requests} invalidations=${s.invalidations} responses=${s.responses} grants=${s.grants}`,
        );
      }
      case "count":
        return [
          `keys=${server.keyCount} entries=${server.entryCount} recovering=${server.recovering}` +
            (server.keysWaitingForWriteSeqs > 0 ? ` waiting-for-seqs=${server.keysWaitingForWriteSeqs}` : ""),
        ];
      default:
        throw new Error(`unknown command ${command}`);
    }
  }

  return (command, args) => {
    const printed = run(command, args);
    const rows = server.dump();
    const keys = new Set(rows.map((r) => r.key));
    if (server.entryCount !== rows.length || server.keyCount !== keys.size) {
      throw new Error(
        `counts disagree with dump: keyCount=${server.keyCount} entryCount=${server.entryCount}, dump has ${keys.size} keys ${rows.length} entries`,
      );
    }
    return printed;
  };
}

transcriptTests("lock server", TRANSCRIPTS_DIR, makeHandler);
