/**
 * A client's recovery report from cold code, for instruction counts: one process builds a ClientLocks
 * holding 10,000 write locks (acquired and granted in process, so the acquire path is warm), then runs
 * what a client runs once a new server asks for its locks, for the first time in the process:
 * onNewServer, and recoverBatch + encodeFrameBuffer of every batch of RECOVER_BATCH_LOCKS_MAX until
 * the empty one. `none` does the setup and prints alike (the baseline). Cold report in instructions =
 * Ir(full) − Ir(none), JIT compiles (--single-threaded: in program order), GC and interpreter included,
 * unlike bench/recover-cost.ts (warmed, per lock):
 *   npx esbuild bench/recover-cold-cost.ts --bundle --platform=node --format=esm --outfile=/tmp/rc.mjs
 *   valgrind --tool=callgrind node --single-threaded /tmp/rc.mjs [none]
 * Repeat and alternate trees: a figure moves by up to ~10 % between runs (JIT and GC timing).
 * The whole-process figures (full and none alike) move by ±20M between identical runs (start-up, GC); the
 * report alone is steadier (±0.1–5M): callgrind dumps a part at every process.cpuUsage() (the report's
 * first call is the start of part 2, its last one the end of the last numbered part), and their sum is the
 * report's window, with no baseline run to subtract:
 *   mkdir -p /tmp/rcw && valgrind --tool=callgrind --dump-before=uv_getrusage --callgrind-out-file=/tmp/rcw/o \
 *     node --single-threaded /tmp/rc.mjs >/dev/null 2>&1
 *   n=$(ls /tmp/rcw | grep -c 'o\.'); for i in $(seq 2 $n); do sed -n 's/^totals: //p' /tmp/rcw/o.$i; done | paste -sd+ | bc
 */
import { ClientLocks } from "../src/core/client-locks.js";
import { encodeFrameBuffer } from "../src/protocol/codec.js";
import { Command, WireError } from "../src/protocol/messages.js";
import { keyFromText, type Key } from "../src/core/keys.js";

const N = 10_000;
const client = new ClientLocks({ idleLockLimit: N + 1 });
for (let i = 0; i < N; i++) {
  const key = keyFromText(`held/0/${i}`);
  client.acquire(i + 1, key, "write", { nonblock: false });
  // The grant's proof: server term 1, its number, a 53-bit tag of the usual size (not checked here).
  client.onGrant({
    key,
    oldMode: "null",
    newMode: "write",
    writeSeq: BigInt(i + 1),
    grantTerm: 1n,
    grantNo: i + 1,
    grantTag: 0x1a_2fb7_692e_657a + i,
  });
  client.release(i + 1);
}
const none = process.argv[2] === "none";
const ms = (since: NodeJS.CpuUsage): number => {
  const c = process.cpuUsage(since);
  return (c.user + c.system) / 1000;
};
console.log("report");
const start = process.cpuUsage();
if (!none) client.onNewServer();
let recoverMs = 0;
let encodeMs = 0;
let after: Key | null = null;
let total = 0;
let bytes = 0;
for (let batch = 0; !none; batch++) {
  const t = process.cpuUsage();
  const locks = client.recoverBatch(after, 1000);
  recoverMs += ms(t);
  const u = process.cpuUsage();
  const header = {
    seq: batch + 10,
    ack: batch + 5,
    id: batch + 3,
    cmd: Command.LOCK_RECOVER,
    response: true,
    error: WireError.NONE,
  };
  bytes += encodeFrameBuffer({ header, payload: { kind: "recover-response", body: { locks } } }).length;
  encodeMs += ms(u);
  total += locks.length;
  if (locks.length === 0) break;
  after = locks[locks.length - 1]!.key;
}
// CPU figures (noisy on a shared machine; the instruction count is the figure to compare).
console.log(JSON.stringify({ cpuMs: ms(start), recoverMs, encodeMs, locks: total, bytes }));
