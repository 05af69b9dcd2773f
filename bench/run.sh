#!/usr/bin/env bash
# `make bench`: every benchmark against the running stack of `make run` (or STACK_ENV).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bench/http.sh
.venv/bin/python bench/auth.py "$@"
