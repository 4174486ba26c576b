#!/bin/sh
# The client process's instructions per networked operation, counted by callgrind (bench/client-cost.ts):
#   sh bench/client-cost.sh [N] [MODES]     (default N = 3000, MODES = "cold fresh handoff")
# Starts a `keylock up` (not under valgrind, --fence-command true, 127.0.0.1) and, for handoff, a partner
# client process; only the measured client runs under valgrind (node --single-threaded, bundled with
# esbuild). Figure = (Ir(3N) − Ir(N)) / 2N: start-up, connect and warm-up cancel. User-space instructions
# only (the kernel's part of each read and write is not in them). Repeat before trusting a difference
# below ~10 % (JIT and GC timing move a figure by a few per cent between runs). By function, per operation:
#   KEEP_DIR=DIR KEYLOCK_CLIENT_NODE_FLAGS=--perf-basic-prof sh bench/client-cost.sh N MODE
#   npx tsx bench/server-cost.ts --breakdown DIR MODE N      (--perf-basic-prof names JIT-compiled functions)
set -eu
N=${1:-3000}
MODES=${2:-cold fresh handoff}
N3=$((3 * N))
HERE=$(dirname "$0")
DIR=${KEEP_DIR:-$(mktemp -d /tmp/keylock-client-cost-XXXXXX)}
mkdir -p "$DIR"
UP=""
PARTNER=""
cleanup() {
  if [ -n "$PARTNER" ]; then kill "$PARTNER" 2>/dev/null || true; fi
  if [ -n "$UP" ]; then kill "$UP" 2>/dev/null || true; fi
  if [ -z "${KEEP_DIR:-}" ]; then rm -rf "$DIR"; fi
}
trap cleanup EXIT
npx esbuild "$HERE/client-cost.ts" --bundle --platform=node --format=esm --log-level=warning --external:better-sqlite3 --external:pg --outfile="$DIR/client-cost.mjs"
ir() { # name, then the node arguments
  NAME=$1
  shift
  valgrind --tool=callgrind --callgrind-out-file="$DIR/$NAME.out" node --single-threaded ${KEYLOCK_CLIENT_NODE_FLAGS:-} "$@" >/dev/null 2>"$DIR/stderr.$NAME"
  sed -n 's/^summary: //p; s/^totals: //p' "$DIR/$NAME.out" | head -1
}
PORT=$((20000 + $(od -An -N2 -tu2 /dev/urandom) % 40000))
node --import tsx "$HERE/../src/cli/main.ts" up --dir "$DIR/store" --port "$PORT" --host 127.0.0.1 --fence-command true >"$DIR/up.log" 2>&1 &
UP=$!
while ! grep -q "serving on" "$DIR/up.log" 2>/dev/null; do sleep 0.2; done
S="127.0.0.1:$PORT"
for MODE in $MODES; do
  if [ "$MODE" = handoff ]; then
    for RUN in 1 3; do
      KEY="handoff/$RUN/$$"
      node "$DIR/client-cost.mjs" partner "$S" "$KEY" >"$DIR/partner.$RUN.log" 2>&1 &
      PARTNER=$!
      while ! grep -q ready "$DIR/partner.$RUN.log" 2>/dev/null; do sleep 0.2; done
      if [ "$RUN" = 1 ]; then A=$(ir "$MODE.$N.callgrind" "$DIR/client-cost.mjs" handoff "$S" "$KEY,$N"); else B=$(ir "$MODE.$N3.callgrind" "$DIR/client-cost.mjs" handoff "$S" "$KEY,$N3"); fi
      kill "$PARTNER" 2>/dev/null || true
      wait "$PARTNER" 2>/dev/null || true
      PARTNER=""
    done
  else
    A=$(ir "$MODE.$N.callgrind" "$DIR/client-cost.mjs" "$MODE" "$S" "$N")
    B=$(ir "$MODE.$N3.callgrind" "$DIR/client-cost.mjs" "$MODE" "$S" "$N3")
  fi
  echo "client process per $MODE operation: $(( (B - A) / (N3 - N) )) instructions"
done
