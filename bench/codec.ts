// Micro-benchmark of the wire codec's hot message (issue 10): encode and decode of a LOCK request and of a
// write GRANT (LOCK response with a writeSeq), each in a tight loop after a warm-up, in ns per message.
//   npx tsx bench/codec.ts [--runs 3] [--iterations 1000000] [--codec PATH ...] [--loop FIGURE --n N]
// With several --codec paths (e.g. a baseline checkout's src/protocol/codec.ts and this one) the runs
// alternate between them in one process, and the ratio of each codec to the first is printed per figure.
import { Command, WireError, type Message } from "../src/protocol/messages.js";
import { keyFromText } from "../src/core/keys.js";

interface Codec {
  encodeMessage(message: Message): Uint8Array;
  decodeBody(body: Uint8Array): Message;
}

function argValues(name: string): string[] {
  const out: string[] = [];
  for (let i = 2; i < process.argv.length; i++)
    if (process.argv[i] === name && process.argv[i + 1]) out.push(process.argv[++i]!);
  return out;
}
const runs = Number(argValues("--runs")[0] ?? 3);
const iterations = Number(argValues("--iterations")[0] ?? 1_000_000);
const paths = argValues("--codec");
if (paths.length === 0) paths.push(new URL("../src/protocol/codec.ts", import.meta.url).pathname);
const codecs: Codec[] = [];
for (const path of paths) codecs.push((await import(path)) as Codec);

const key = keyFromText("orders/000042");
/** A grant tag of the usual size (a tag is 53 bits: nearly always above 2^32-1). */
const GRANT_TAG = 0x1a_2fb7_692e_657a;
const request: Message = {
  header: { seq: 1234, ack: 1200, id: 617, cmd: Command.LOCK, response: false, error: WireError.NONE },
  payload: {
    kind: "lock",
    body: {
      key,
      oldMode: "null",
      newMode: "write",
      writeSeq: 0n,
      noQueue: false,
      grantTerm: 0n,
      grantNo: 0,
      grantTag: 0,
    },
  },
};
const grant: Message = {
  header: { seq: 1300, ack: 1234, id: 617, cmd: Command.LOCK, response: true, error: WireError.NONE },
  payload: {
    kind: "lock",
    // A grant's proof as a server sends it: a small term, its grant number, a 53-bit tag (9 bytes on the wire).
    body: {
      key,
      oldMode: "null",
      newMode: "write",
      writeSeq: 987_654_321n,
      noQueue: false,
      grantTerm: 1n,
      grantNo: 1_234_567,
      grantTag: GRANT_TAG,
    },
  },
};
const FIGURES = ["encode request", "encode grant", "decode request", "decode grant"] as const;

let sink = 0;
function measure(codec: Codec, figure: (typeof FIGURES)[number], n: number): number {
  const message = figure.endsWith("request") ? request : grant;
  const body = codec.encodeMessage(message).subarray(4);
  const started = process.hrtime.bigint();
  if (figure.startsWith("encode")) {
    for (let i = 0; i < n; i++) sink += codec.encodeMessage(message).length;
  } else {
    for (let i = 0; i < n; i++) sink += codec.decodeBody(body).header.seq;
  }
  return Number(process.hrtime.bigint() - started) / n;
}

// --loop FIGURE N: warm up, then run FIGURE N times with the first codec and exit (no timing): for
// instruction counts, `valgrind --tool=callgrind` of N=0 and N=large, divided by the difference.
const loop = argValues("--loop");
if (loop.length > 0) {
  const figure = FIGURES.find((f) => f === loop[0]!.replace("-", " "));
  if (figure === undefined) throw new Error(`--loop: one of ${FIGURES.join(", ")} (with - for the space)`);
  measure(codecs[0]!, figure, 20_000);
  measure(codecs[0]!, figure, Number(argValues("--n")[0] ?? 100_000));
  process.exit(0);
}

// Warm-up: every codec, every figure (so each reaches optimised code before it is timed).
for (const codec of codecs)
  for (const figure of FIGURES) measure(codec, figure, Math.min(iterations, 200_000));

const results = codecs.map(() => new Map<string, number[]>(FIGURES.map((f) => [f, []])));
for (let run = 0; run < runs; run++) {
  for (const figure of FIGURES) {
    codecs.forEach((codec, c) => results[c]!.get(figure)!.push(measure(codec, figure, iterations)));
  }
}
// The fastest run of each: on a shared machine, interference only ever adds time.
const fastest = (values: number[]): number => Math.min(...values);
for (const figure of FIGURES) {
  const base = fastest(results[0]!.get(figure)!);
  const cells = codecs.map((_, c) => {
    const values = results[c]!.get(figure)!;
    const m = fastest(values);
    return `${paths[c]}: ${values.map((v) => v.toFixed(0)).join("/")} ns (fastest ${m.toFixed(0)}, ${(m / base).toFixed(2)}×)`;
  });
  console.log(`${figure.padEnd(15)} ${cells.join("  |  ")}`);
}
if (sink === 0.5) console.log(sink);
