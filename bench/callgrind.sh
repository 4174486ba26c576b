#!/bin/sh
# Instructions per operation, counted by callgrind (repeatable on a noisy machine, unlike time):
#   sh bench/callgrind.sh [N]        (default N = 10000)
# 1. The server's work per cold grant, stage by stage, without sockets (bench/grant-cost.ts): codec,
#    session, lock table, and all three in the server's order.
# 2. The client's cached acquire+release (bench/cached-cost.ts) against a `keylock up` started here.
# Each figure is ((Ir(3N) − Ir(N)) − (Ir0(3N) − Ir0(N))) / 2N, Ir0 being the setup-only run ("none": it
# builds the same N keys and frames): startup, setup and JIT warm-up cancel out. The harnesses are bundled with
# esbuild (tsx is too slow under valgrind). User-space instructions only: the kernel's share of a socket
# write is not in them (see the CPU profiles in docs/performance.md for that). Node runs --single-threaded
# (V8 compiles and collects on the measured thread, in program order). Even so a stage's figure moves by
# up to ~7 % between runs (JIT and GC timing): repeat a stage before trusting a difference below ~10 %.
set -eu
N=${1:-10000}
N3=$((3 * N))
HERE=$(dirname "$0")
DIR=$(mktemp -d /tmp/keylock-callgrind-XXXXXX)
UP=""
trap 'if [ -n "$UP" ]; then kill "$UP" 2>/dev/null || true; fi; rm -rf "$DIR"' EXIT
bundle() {
  npx esbuild "$HERE/$1.ts" --bundle --platform=node --format=esm --log-level=warning --external:better-sqlite3 --external:pg --outfile="$DIR/$1.mjs"
}
ir() { # name, then the node arguments
  NAME=$1
  shift
  valgrind --tool=callgrind --callgrind-out-file="$DIR/$NAME.out" node --single-threaded "$@" >/dev/null 2>"$DIR/$NAME.err"
  sed -n 's/^summary: //p; s/^totals: //p' "$DIR/$NAME.out" | head -1
}
bundle grant-cost
A0=$(ir none.1 "$DIR/grant-cost.mjs" none "$N")
B0=$(ir none.3 "$DIR/grant-cost.mjs" none "$N3")
for STAGE in codec session locktable all; do
  A=$(ir "$STAGE.1" "$DIR/grant-cost.mjs" "$STAGE" "$N")
  B=$(ir "$STAGE.3" "$DIR/grant-cost.mjs" "$STAGE" "$N3")
  echo "server per cold grant, $STAGE: $(( ((B - A) - (B0 - A0)) / (N3 - N) )) instructions"
done

bundle cached-cost
PORT=$((20000 + $(od -An -N2 -tu2 /dev/urandom) % 40000))
node --import tsx "$HERE/../src/cli/main.ts" up --dir "$DIR/store" --port "$PORT" --fence-command true >"$DIR/up.log" 2>&1 &
UP=$!
while ! grep -q "serving on" "$DIR/up.log" 2>/dev/null; do sleep 0.2; done
A=$(ir cached.1 "$DIR/cached-cost.mjs" "127.0.0.1:$PORT" "$((10 * N))")
B=$(ir cached.3 "$DIR/cached-cost.mjs" "127.0.0.1:$PORT" "$((10 * N3))")
echo "client per cached acquire+release: $(( (B - A) / (10 * (N3 - N)) )) instructions"
