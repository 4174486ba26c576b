/**
 * The server's work per cold grant, stage by stage, without sockets, for instruction counts under
 * callgrind (repeatable on a noisy machine, unlike time). One process runs one stage N times:
 *   codec     — FrameDecoder.push of a lock-request frame + encodeMessage of its grant
 *   session   — WireSession.receive of the request header + respond (and the ack that frees it)
 *   locktable — LockServer.onRequest on a fresh key (a grant) — the table keeps growing, as it does
 *   all       — the three together, in the server's order (what the server runs per grant, minus I/O)
 *   none      — setup only (the baseline subtracted from the others)
 * Instructions per grant = (Ir(stage, N) − Ir(none, N)) / N; docs/performance.md has the command
 * (bench/callgrind.sh runs it). Also usable with plain timing: prints ns per operation.
 *   node bench/grant-cost.mjs STAGE N   (bundled with esbuild; tsx itself is too slow under valgrind)
 */
import { FrameDecoder, encodeMessage } from "../src/protocol/codec.js";
import { Command, WireError, type Message } from "../src/protocol/messages.js";
import { WireSession } from "../src/protocol/session.js";
import { LockServer, WriteSeqCounter } from "../src/core/lock-server.js";
import { keyFromText, type Key } from "../src/core/keys.js";

const stage = process.argv[2] ?? "all";
const n = Number(process.argv[3] ?? 100_000);

/** No grant proof (a request); and a grant tag of the usual size (53 bits: nearly always above 2^32-1). */
const NO_PROOF = { grantTerm: 0n, grantNo: 0, grantTag: 0 } as const;
const GRANT_TAG = 0x1a_2fb7_692e_657a;

const keys: Key[] = [];
for (let i = 0; i < n; i++) keys.push(keyFromText(`cold/${String(i).padStart(6, "0")}`));
const frames: Uint8Array[] = keys.map((key, i) =>
  encodeMessage({
    header: { seq: i + 1, ack: i, id: i + 1, cmd: Command.LOCK, response: false, error: WireError.NONE },
    payload: {
      kind: "lock",
      body: { key, oldMode: "null", newMode: "write", writeSeq: 0n, noQueue: false, ...NO_PROOF },
    },
  }),
);

const decoder = new FrameDecoder();
const session = new WireSession();
session.attach(); // a connected session: respond() returns the message to send
const locks = new LockServer({ writeSeq: new WriteSeqCounter() });
const rid = 1n;
let sink = 0;

function codec(i: number): Message {
  const [message] = decoder.push(frames[i]!);
  const grant: Message = {
    header: { seq: i + 1, ack: i + 1, id: i + 1, cmd: Command.LOCK, response: true, error: WireError.NONE },
    payload: {
      kind: "lock",
      body: {
        key: keys[i]!,
        oldMode: "null",
        newMode: "write",
        writeSeq: BigInt(i + 1),
        noQueue: false,
        grantTerm: 1n,
        grantNo: i + 1,
        grantTag: GRANT_TAG,
      },
    },
  };
  sink += encodeMessage(grant).length;
  return message!;
}

function sessionStep(i: number): void {
  session.receive({
    seq: i + 1,
    ack: i,
    id: i + 1,
    cmd: Command.LOCK,
    response: false,
    error: WireError.NONE,
  });
  const out = session.respond(Command.LOCK, i + 1, {
    kind: "lock",
    body: {
      key: keys[i]!,
      oldMode: "null",
      newMode: "write",
      writeSeq: 1n,
      noQueue: false,
      grantTerm: 1n,
      grantNo: i + 1,
      grantTag: GRANT_TAG,
    },
  });
  sink += out === null ? 0 : out.header.seq;
}

function lockStep(i: number): void {
  sink += locks.onRequest(rid, i + 1, {
    key: keys[i]!,
    oldMode: "null",
    newMode: "write",
    noQueue: false,
  }).length;
}

const t0 = process.hrtime.bigint();
for (let i = 0; i < n; i++) {
  switch (stage) {
    case "codec":
      codec(i);
      break;
    case "session":
      sessionStep(i);
      break;
    case "locktable":
      lockStep(i);
      break;
    case "all": {
      const message = codec(i);
      session.receive(message.header);
      const effects = locks.onRequest(rid, message.header.id, {
        key: keys[i]!,
        oldMode: "null",
        newMode: "write",
        noQueue: false,
      });
      sink += effects.length;
      const out = session.respond(Command.LOCK, message.header.id, {
        kind: "lock",
        body: {
          key: keys[i]!,
          oldMode: "null",
          newMode: "write",
          writeSeq: 1n,
          noQueue: false,
          grantTerm: 1n,
          grantNo: i + 1,
          grantTag: GRANT_TAG,
        },
      });
      sink += out === null ? 0 : 1;
      break;
    }
    case "none":
      break;
    default:
      throw new Error(`unknown stage ${stage}`);
  }
}
const ns = Number(process.hrtime.bigint() - t0);
console.log(JSON.stringify({ stage, n, nsPerOp: n > 0 ? ns / n : 0, sink }));
