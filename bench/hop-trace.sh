#!/bin/sh
# Where one hop's time goes, per process, during one bench row (bench/hop-trace.ts says what each figure is):
#   sh bench/hop-trace.sh ROW [BUILD]     ROW = cold | handoff | hot | fresh; BUILD = a compiled bench
#                                         (default .bench-build: `npx tsc -p tsconfig.bench.json` first)
# Runs `node BUILD/bench/main.js --no-peers --only ROW`, and once the row's processes run, records the
# scheduler's and the syscalls' tracepoints of those processes (perf record -p, 0.5 s; needs root or
# perf_event_paranoid ≤ 1), then prints the per-process summary.
set -eu
ROW=${1:?usage: sh bench/hop-trace.sh cold|handoff|hot|fresh [BUILD]}
BUILD=${2:-.bench-build}
HERE=$(dirname "$0")
DIR=$(mktemp -d /tmp/keylock-hop-trace-XXXXXX)
trap 'rm -rf "$DIR"' EXIT
case "$ROW" in
  cold) WORKERS="" ;;
  handoff) WORKERS='"kind":"handoff"' ;;
  hot) WORKERS='"shape":"hot"' ;;
  fresh) WORKERS='"shape":"fresh"' ;;
  *) echo "unknown row $ROW" >&2; exit 2 ;;
esac
node "$BUILD/bench/main.js" --no-peers --only "$ROW" --json "$DIR/run.json" --svg "$DIR/run.svg" >"$DIR/bench.log" 2>&1 &
BENCH=$!
SERVER=""
while [ -z "$SERVER" ]; do sleep 0.1; SERVER=$(pgrep -f "$BUILD/src/cli/main.js up" | head -1 || true); done
PIDS="$SERVER=server"
if [ -z "$WORKERS" ]; then
  # the cold row's client is the bench process itself; the floor's echo server answers it in between
  sleep 0.8
  PIDS="$PIDS,$BENCH=client,$(pgrep -f "$BUILD/bench/echo-server.js" | head -1)=echo-server"
else
  while ! pgrep -f "$WORKERS" >/dev/null; do sleep 0.1; done
  sleep 1.5
  for P in $(pgrep -f "$WORKERS"); do PIDS="$PIDS,$P=worker"; done
fi
perf record -q -o "$DIR/perf.data" -p "$(echo "$PIDS" | sed 's/=[a-z-]*//g')" \
  -e sched:sched_switch -e sched:sched_wakeup -e raw_syscalls:sys_enter -e raw_syscalls:sys_exit -- sleep 0.5 2>"$DIR/perf.err"
wait "$BENCH" || true
grep -E "^  (echo|keylock) " "$DIR/bench.log" || true
perf script -i "$DIR/perf.data" -F comm,pid,tid,cpu,time,event,trace >"$DIR/perf.txt" 2>/dev/null
npx tsx "$HERE/hop-trace.ts" "$DIR/perf.txt" "$PIDS"
