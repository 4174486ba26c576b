/**
 * Lock recovery's work per batch of RECOVER_BATCH_LOCKS_MAX locks, stage by stage, without sockets, for
 * instruction counts under callgrind (like grant-cost.ts). One process runs one stage on N batches, each
 * from its own client (rid) with its own keys, shaped like the bench's recovery row (`held/P/0/I`, write
 * locks with a write seq):
 *   client  — the client's report: ClientLocks.recoverBatch of 1000 locks + encodeMessage of the response
 *             (a client holding 10,000 locks, batches taken in turn)
 *   decode  — the server's FrameDecoder.push of one recover-response frame
 *   ingest  — LockServer.onRecoverBatch of one decoded batch (checks and table entries)
 *   server  — decode + ingest, in the server's order
 *   gone    — server, then resumeAfterRecovery and every client's departure (onClientGone), in rid order;
 *             subtract `server` instead of `none` for the departures' cost per lock
 *   none    — setup only (the baseline subtracted from the others)
 * Instructions per lock = ((Ir(3N) − Ir(N)) − (Ir0(3N) − Ir0(N))) / (2N × 1000); bench/callgrind.sh
 * `recover` runs it. Also usable with plain timing: prints ns per lock.
 *   node bench/recover-cost.mjs STAGE N   (bundled with esbuild; tsx itself is too slow under valgrind)
 */
import { FrameDecoder, encodeMessage, encodeMessageGeneric } from "../src/protocol/codec.js";
import { Command, WireError, type Message } from "../src/protocol/messages.js";
import { LockServer, WriteSeqCounter } from "../src/core/lock-server.js";
import { ClientLocks } from "../src/core/client-locks.js";
import { RECOVER_BATCH_LOCKS_MAX, type RecoveredLock } from "../src/core/lock-messages.js";
import { compareKeys, keyFromText, type Key } from "../src/core/keys.js";

const stage = process.argv[2] ?? "server";
const n = Number(process.argv[3] ?? 100);
const BATCH = RECOVER_BATCH_LOCKS_MAX;
const CLIENT_LOCKS = 10 * BATCH;
/** Grant proofs: server term 1, the grant's number, a 53-bit tag of the usual size (not checked here). */
const GRANT_TAG = 0x1a_2fb7_692e_657a;

function header(i: number, response: boolean): Message["header"] {
  return { seq: i + 1, ack: i, id: i + 1, cmd: Command.LOCK_RECOVER, response, error: WireError.NONE };
}

// Setup shared by every stage (so `none` subtracts it): one client holding CLIENT_LOCKS write locks, and
// N batches of distinct locks (one per rid) with their frames, encoded by the generic path.
const client = new ClientLocks({ idleLockLimit: CLIENT_LOCKS + 1 });
for (let i = 0; i < CLIENT_LOCKS; i++) {
  const key = keyFromText(`held/7/0/${i}`);
  client.acquire(i + 1, key, "write", { nonblock: false });
  client.onGrant({
    key,
    oldMode: "null",
    newMode: "write",
    writeSeq: BigInt(i + 1),
    grantTerm: 1n,
    grantNo: i + 1,
    grantTag: GRANT_TAG + i,
  });
  client.release(i + 1);
}
const clientKeys: Key[] = client.recoverBatch(null, CLIENT_LOCKS + 1).map((lock) => lock.key);
const batches: RecoveredLock[][] = [];
const frames: Uint8Array[] = [];
for (let b = 0; b < n; b++) {
  const locks: RecoveredLock[] = [];
  for (let i = 0; i < BATCH; i++) {
    const grantNo = b * BATCH + i + 1;
    locks.push({
      key: keyFromText(`held/${b}/0/${i}`),
      mode: "write",
      writeSeq: BigInt(grantNo),
      grantTerm: 1n,
      grantNo,
      grantTag: GRANT_TAG + grantNo,
    });
  }
  locks.sort((x, y) => compareKeys(x.key, y.key));
  batches.push(locks);
  frames.push(
    encodeMessageGeneric({ header: header(b, true), payload: { kind: "recover-response", body: { locks } } }),
  );
}
const decoder = new FrameDecoder();
const table = new LockServer({ writeSeq: new WriteSeqCounter() });
table.holdForRecovery();
let sink = 0;

function ingest(b: number, locks: readonly RecoveredLock[]): void {
  const effects = table.onRecoverBatch(BigInt(b + 1), locks);
  if (effects.length > 0)
    throw new Error(
      `batch ${b} refused: ${JSON.stringify(effects[0], (_, v: unknown) => (typeof v === "bigint" ? String(v) : v))}`,
    );
}

function decode(b: number): readonly RecoveredLock[] {
  const [message] = decoder.push(frames[b]!);
  if (message?.payload.kind !== "recover-response") throw new Error("not a recover-response");
  return message.payload.body.locks;
}

const t0 = process.hrtime.bigint();
for (let b = 0; b < n; b++) {
  switch (stage) {
    case "client": {
      const at = (b % (CLIENT_LOCKS / BATCH)) * BATCH;
      const locks = client.recoverBatch(at === 0 ? null : clientKeys[at - 1]!, BATCH);
      sink += encodeMessage({
        header: header(b, true),
        payload: { kind: "recover-response", body: { locks } },
      }).length;
      break;
    }
    case "decode":
      sink += decode(b).length;
      break;
    case "ingest":
      ingest(b, batches[b]!);
      break;
    case "server":
    case "gone":
      ingest(b, decode(b));
      break;
    case "none":
      break;
    default:
      throw new Error(`unknown stage ${stage}`);
  }
}
if (stage === "gone") {
  if (table.resumeAfterRecovery().length > 0) throw new Error("resume had effects");
  for (let b = 0; b < n; b++)
    if (table.onClientGone(BigInt(b + 1)).length > 0) throw new Error("a departure had effects");
  if (table.keyCount !== 0) throw new Error("keys left after every departure");
}
const ns = Number(process.hrtime.bigint() - t0);
console.log(JSON.stringify({ stage, batches: n, nsPerLock: n > 0 ? ns / (n * BATCH) : 0, sink }));
