/**
 * Where one hop's wall-clock time goes, per process: the kernel's scheduler and syscall tracepoints
 * (`perf record`), recorded during one bench row and summarised here. A hop is a frame arriving at a
 * process and that process's answer leaving it; on a 2-core machine its time splits into
 *   wake → run        the wake-up (sched_wakeup of the process until sched_switch to it);
 *   epoll → write     from epoll_wait returning with work to the write(2) of the answer: reading,
 *                     decoding, the lock logic, encoding, and whatever else the process runs first;
 *   write(2)          the write itself (on loopback it carries the segment through TCP to the receiver);
 *   write → epoll     what the process still does after its write before it sleeps (off the hop's path
 *                     unless the next frame comes before it is done).
 *
 *   sh bench/hop-trace.sh ROW          (ROW = cold | handoff | hot | fresh; needs perf and root, and the
 *                                       bench built by `npx tsc -p tsconfig.bench.json`)
 *   npx tsx bench/hop-trace.ts SCRIPT.txt PID=NAME[,PID=NAME...]
 *                                      (SCRIPT.txt: `perf script -F comm,pid,tid,cpu,time,event,trace`)
 *
 * Figures are under tracing (each traced event costs a few µs): compare processes and trees traced the
 * same way, not against untraced bench rows.
 */
import { readFileSync } from "node:fs";
import { percentile } from "./stats.js";

const SYS_READ = 0;
const SYS_WRITE = 1;
const SYS_WRITEV = 20;
const SYS_EPOLL_WAIT = 232;
const SYS_EPOLL_PWAIT = 281;
/** An epoll_wait shorter than this (µs) did not sleep: the process found work without waiting for it. */
const SLEPT_US = 20;

const [file, pidList] = process.argv.slice(2);
if (file === undefined || pidList === undefined) {
  console.error("usage: npx tsx bench/hop-trace.ts PERF-SCRIPT.txt PID=NAME[,PID=NAME...]");
  process.exit(2);
}
const names = new Map(pidList.split(",").filter(Boolean).map((item) => [Number(item.split("=")[0]), item.split("=")[1] ?? ""]));
const pids = [...names.keys()];

interface ProcessState {
  syscallAt: number;
  wokeAt: number | undefined;
  wroteAt: number | undefined;
}

const states = new Map<number, ProcessState>();
const figures = new Map<number, Map<string, number[]>>();
const record = (pid: number, name: string, us: number): void => {
  let byName = figures.get(pid);
  if (byName === undefined) figures.set(pid, (byName = new Map<string, number[]>()));
  let values = byName.get(name);
  if (values === undefined) byName.set(name, (values = []));
  values.push(us);
};
const wakeRequestedAt = new Map<number, number>();
const LINE = /^\s*\S+\s+(\d+)\/(\d+)\s+\[\d+\]\s+([\d.]+):\s+(\S+):\s*(.*)$/;

for (const line of readFileSync(file, "utf8").split("\n")) {
  const match = LINE.exec(line);
  if (match === null) continue;
  const [, pidText, tidText, secondsText, event, trace] = match as unknown as [string, string, string, string, string, string];
  const pid = Number(pidText);
  if (pid !== Number(tidText) || !pids.includes(pid)) continue; // main threads only (V8's helpers are not on the path)
  const at = Number(secondsText) * 1e6;
  if (event === "sched:sched_wakeup") {
    wakeRequestedAt.set(Number(/ pid=(\d+)/.exec(trace)![1]), at);
    continue;
  }
  if (event === "sched:sched_switch") {
    const next = Number(/next_pid=(\d+)/.exec(trace)![1]);
    const requested = wakeRequestedAt.get(next);
    if (requested !== undefined) {
      record(next, "wake → run", at - requested);
      wakeRequestedAt.delete(next);
    }
    continue;
  }
  const nr = Number(/NR (\d+)/.exec(trace)?.[1] ?? -1);
  let state = states.get(pid);
  if (state === undefined) states.set(pid, (state = { syscallAt: at, wokeAt: undefined, wroteAt: undefined }));
  const isWrite = nr === SYS_WRITE || nr === SYS_WRITEV;
  const isEpoll = nr === SYS_EPOLL_WAIT || nr === SYS_EPOLL_PWAIT;
  if (event === "raw_syscalls:sys_enter") {
    state.syscallAt = at;
    if (isWrite && state.wokeAt !== undefined) {
      record(pid, "epoll → write", at - state.wokeAt);
      state.wokeAt = undefined;
    }
    if (isEpoll && state.wroteAt !== undefined) {
      record(pid, "write → epoll", at - state.wroteAt);
      state.wroteAt = undefined;
    }
  } else if (event === "raw_syscalls:sys_exit") {
    const result = Number(trace.split("= ")[1]);
    if (isEpoll && result > 0 && at - state.syscallAt > SLEPT_US) state.wokeAt = at;
    if (isWrite) {
      record(pid, "write(2)", at - state.syscallAt);
      state.wroteAt = at;
    }
    if (nr === SYS_READ) record(pid, "read(2)", at - state.syscallAt);
  }
}

const ORDER = ["wake → run", "epoll → write", "write(2)", "write → epoll", "read(2)"];
for (const pid of pids) {
  console.log(`${names.get(pid)} (pid ${pid})`);
  const byName = figures.get(pid) ?? new Map<string, number[]>();
  for (const key of ORDER) {
    const values = byName.get(key);
    if (values === undefined) continue;
    const mean = values.reduce((a, b) => a + b, 0) / values.length;
    console.log(`  ${key.padEnd(14)} n ${String(values.length).padStart(6)}  p50 ${percentile(values, 50).toFixed(0).padStart(4)} µs  p90 ${percentile(values, 90).toFixed(0).padStart(4)} µs  mean ${mean.toFixed(1)} µs`);
  }
}
