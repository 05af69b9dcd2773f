#!/usr/bin/env bash
# `make test` after the release build: the unit tests (`swift test`), then a stack of its
# own in .run/test (free ports, 2 FastCGI processes, 2 relays) and the integration suite
# against it. The stack is stopped whatever happens. pytest's summary closes the output;
# the exit status is pytest's, or 1 when the unit tests failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export STACK_DIR=.run/test
stack_log=.run/test-stack.log

# SKIP_UNIT=1 and PYTEST_ARGS (default: the whole suite) serve `make fuzz`.
unit_status=0
if [[ "${SKIP_UNIT:-0}" != 1 ]]; then swift test || unit_status=$?; fi

mkdir -p .run
stop_stack() { scripts/stack.sh stop >>"$stack_log" 2>&1 || echo "stack stop failed: see $stack_log" >&2; }
trap stop_stack EXIT

# A stack left over from an interrupted run would keep its old binaries and config.
scripts/stack.sh stop >"$stack_log" 2>&1 || true
# Test settings: the OAuth stand-in, a short login rate-limit window so the suite can
# wait one out, a per-address login limit that a burst reaches well within that window
# (50 wrong passwords: 50 argon2id checks, about 3 s here; the whole suite makes at most
# about 10 failed logins in any 8 s outside the burst tests), a short FastCGI I/O timeout
# so it can wait out a stalled request, MongoDB keep-alive pings often enough to be seen,
# SecantusDB's failpoints (a MongoDB that answers with errors, not only one that is down),
# and presence claims that lapse in 6 s so a killed relay's users are announced offline soon.
FCGI_PROCESSES=2 WS_RELAYS=2 OAUTH_STANDIN=1 MONGO_TEST_COMMANDS=1 RATE_LIMIT_LOGIN_PER_EMAIL=5 RATE_LIMIT_WINDOW_SECONDS=8 \
  SWIFTCHAT_CONF_RATE_LIMIT_LOGIN_PER_ADDRESS=50 SWIFTCHAT_CONF_PRESENCE_TTL_SECONDS=6 \
  SWIFTCHAT_CONF_FCGI_IO_TIMEOUT_SECONDS=3 SWIFTCHAT_CONF_MONGO_KEEPALIVE_SECONDS=2 scripts/stack.sh start

if ((unit_status != 0)); then
  echo "swift test failed (exit $unit_status): running the integration suite anyway; make test fails."
fi

py_status=0
STACK_ENV=$PWD/.run/test/stack.env .venv/bin/python -m pytest -q -p no:cacheprovider \
  --timeout=${PYTEST_TIMEOUT:-600} ${PYTEST_ARGS:-Tests/integration} || py_status=$?

stop_stack
trap - EXIT
if ((py_status != 0)); then exit "$py_status"; fi
exit "$unit_status"
