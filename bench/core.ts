/**
 * In-process benchmarks of the pure core, run in a child with --expose-gc (see run.ts):
 *  - server memory per granted (key, client) entry at 1,000,000 entries (DESIGN §7: ≤ 300 bytes);
 *  - server-side cost of recovering 1,000,000 locks reported by 100 clients in batches of 1000, through the
 *    real codec (decode) and lock table (DESIGN §7: ≤ 3 s end to end), and the recovered table's heap per
 *    entry (recoveredBytesPerEntry, key strings included);
 *  - clientGoneMs: the lock table's cost of one client's departure (onClientGone) when it has
 *    ENTRIES / CLIENTS granted entries (10,000) in the ENTRIES-entry table: the mean over GONE_CLIENTS
 *    departures, one after another, from the memory table once it is measured (the table then shrinks by
 *    GONE_CLIENTS / CLIENTS, 10 %).
 * Prints one JSON line.
 */
import { LockServer, WriteSeqCounter } from "../src/core/lock-server.js";
import { keyFromText, type Key } from "../src/core/keys.js";
import { RECOVER_BATCH_LOCKS_MAX, type RecoveredLock } from "../src/core/lock-messages.js";
import { decodeBody, encodeMessage } from "../src/protocol/codec.js";
import { Command, WireError } from "../src/protocol/messages.js";

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --expose-gc");
const ENTRIES = Number(process.argv[2] ?? 1_000_000);
const CLIENTS = 100;
const GONE_CLIENTS = 10;

function heap(): number {
  gc!();
  gc!();
  return process.memoryUsage().heapUsed;
}

/** A grant tag of the usual size (53 bits). */
const GRANT_TAG = 0x1a_2fb7_692e_657a;

const keyOf = (i: number): Key => keyFromText(`orders/${i.toString().padStart(8, "0")}`);

// Memory: ENTRIES keys (16 bytes each, counted: the table holds them), one granted write entry each,
// spread over CLIENTS clients.
const before = heap();
const server = new LockServer({ writeSeq: new WriteSeqCounter() });
for (let i = 0; i < ENTRIES; i++) {
  server.onRequest(BigInt((i % CLIENTS) + 1), i + 1, {
    key: keyOf(i),
    oldMode: "null",
    newMode: "write",
    noQueue: false,
  });
}
const after = heap();
const bytesPerEntry = (after - before) / server.entryCount;

// Departures: clients CLIENTS, CLIENTS - 1, ... leave (each one's keys are spread over the whole table).
let goneMs = 0;
for (let c = CLIENTS; c > CLIENTS - GONE_CLIENTS; c--) {
  const t = performance.now();
  server.onClientGone(BigInt(c));
  goneMs += performance.now() - t;
}
const clientGoneMs = goneMs / GONE_CLIENTS;
const keys: Key[] = [];
for (let i = 0; i < ENTRIES; i++) keys.push(keyOf(i));

// Recovery: each client reports ENTRIES / CLIENTS locks in frames of RECOVER_BATCH_LOCKS_MAX.
const frames: Uint8Array[][] = [];
for (let c = 0; c < CLIENTS; c++) {
  const mine: RecoveredLock[] = [];
  for (let i = c; i < ENTRIES; i += CLIENTS) {
    // The proof of each lock's grant: server term 1, the grant's number, a 53-bit tag (not checked here).
    mine.push({
      key: keys[i]!,
      mode: "write",
      writeSeq: BigInt(i + 1),
      grantTerm: 1n,
      grantNo: i + 1,
      grantTag: GRANT_TAG + i,
    });
  }
  mine.sort((a, b) => (a.key < b.key ? -1 : 1));
  const clientFrames: Uint8Array[] = [];
  for (let at = 0; at < mine.length; at += RECOVER_BATCH_LOCKS_MAX) {
    clientFrames.push(
      encodeMessage({
        header: {
          seq: at + 1,
          ack: 0,
          id: at + 1,
          cmd: Command.LOCK_RECOVER,
          response: true,
          error: WireError.NONE,
        },
        payload: { kind: "recover-response", body: { locks: mine.slice(at, at + RECOVER_BATCH_LOCKS_MAX) } },
      }),
    );
  }
  frames.push(clientFrames);
}
const beforeRecovery = heap();
const recovering = new LockServer({ writeSeq: new WriteSeqCounter() });
recovering.holdForRecovery();
let decodeMs = 0;
const start = performance.now();
for (let c = 0; c < CLIENTS; c++) {
  for (const frame of frames[c]!) {
    const t = performance.now();
    const message = decodeBody(frame.subarray(4));
    decodeMs += performance.now() - t;
    if (message.payload.kind !== "recover-response") throw new Error("bad frame");
    recovering.onRecoverBatch(BigInt(c + 1), message.payload.body.locks);
  }
}
recovering.resumeAfterRecovery();
const recoveryMs = performance.now() - start;
// The recovered table's heap per entry (the decoded key strings included; the frames were there before).
const recoveredBytesPerEntry = (heap() - beforeRecovery) / recovering.entryCount;
process.stdout.write(
  `${JSON.stringify({ entries: ENTRIES, bytesPerEntry, recoveryMs, decodeMs, recovered: recovering.entryCount, recoveredBytesPerEntry, clientGoneMs })}\n`,
);
