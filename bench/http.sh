#!/usr/bin/env bash
# HTTP benchmark (run by hand, not a test): wrk against the trivial FastCGI JSON route
# /api/ping through nginx over TLS and, in the same run, nginx serving a static file with
# the same body. Prints both throughputs and their ratio.
#
# The machine is shared (other processes come and go), so one pair of runs can be off by
# 10% either way: ROUNDS pairs are run interleaved (static, FastCGI, static, FastCGI, ...)
# and the verdict is the median of the rounds' ratios.
#
#   bench/http.sh                      against the stack in .run/dev (make run)
#   STACK_ENV=.run/test/stack.env DURATION=10s CONNECTIONS=64 ROUNDS=5 bench/http.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

STACK_ENV=${STACK_ENV:-.run/dev/stack.env}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
[[ -f $STACK_ENV ]] || { echo "no stack at $STACK_ENV: run 'make run' first" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
# shellcheck disable=SC1090
source "$STACK_ENV"
base=${HTTPS_URL%/}

# The static twin of /api/ping's body, in the folder nginx serves (removed afterwards).
root=$(sed -n 's/^ *root \(.*\);/\1/p' "$STACK_DIR/nginx/swiftchat.site" | head -1)
body=$(curl -sk --max-time 5 "$base/api/ping")
[[ $body == '{"pong":true}' ]] || { echo "unexpected /api/ping answer: $body" >&2; exit 1; }
static_name="bench-pong-$$.json"
printf '%s' "$body" >"$root/$static_name"
trap 'rm -f "$root/$static_name"' EXIT
[[ $(curl -sk --max-time 5 "$base/$static_name") == "$body" ]] || { echo "static twin not served" >&2; exit 1; }

run() { # url -> requests/s
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$1" >"$2" 2>&1
  awk '/^Requests\/sec/ {print $2}' "$2"
}
out=$(mktemp -d)
trap 'rm -f "$root/$static_name"; rm -rf "$out"' EXIT
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, body ${#body} bytes, through nginx over TLS, $ROUNDS interleaved rounds"
# Warm both paths (TLS sessions, FastCGI threads' first accept) before measuring.
wrk -t1 -c8 -d2s "$base/api/ping" >/dev/null 2>&1 || true
p99() { awk '/ 99%/ {print $2}' "$1"; }
errors=""
ratios=()
for ((r = 1; r <= ROUNDS; r++)); do
  static=$(run "$base/$static_name" "$out/static-$r.txt")
  fcgi=$(run "$base/api/ping" "$out/fcgi-$r.txt")
  errors+=$(grep -E "Non-2xx|Socket errors" "$out/fcgi-$r.txt" "$out/static-$r.txt" || true)
  ratio=$(awk -v a="$fcgi" -v b="$static" 'BEGIN { printf "%.3f", a / b }')
  ratios+=("$ratio")
  printf 'round %d: nginx static file (baseline) %10s req/s (p99 %s)   FastCGI /api/ping %10s req/s (p99 %s)   ratio %.2f\n' \
    "$r" "$static" "$(p99 "$out/static-$r.txt")" "$fcgi" "$(p99 "$out/fcgi-$r.txt")" "$ratio"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
printf 'ratio FastCGI / static: median %.2f of %d rounds (%s) (target >= 0.50)\n' "$median" "$ROUNDS" "$(printf '%s ' "${ratios[@]}" | sed 's/ $//')"
[[ -z $errors ]] || { echo "errors during the run:"; echo "$errors"; }
