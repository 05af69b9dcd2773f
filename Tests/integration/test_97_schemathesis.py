"""schemathesis (PyPI) fuzzes the running stack from docs/openapi.yaml through nginx.

Every check schemathesis has runs (no 5xx, documented status codes, content types,
headers and response schemas, negative data rejected, unsupported methods answered 405
with a true Allow, missing auth refused, use-after-free and resource availability over the
stateful links), except `positive_data_acceptance`: it expects every schema-valid request
to succeed, but a well-formed random verification token, OAuth state or reset token is by
design refused (400 invalid_token / invalid_state), as is a name with control characters.
schemathesis.toml gives the per-operation exceptions and why (leaving a room and removing
oneself stay out of the stateful phase: they rightly make the room 404 afterwards).

Two runs, each with a fresh verified user's token: every operation but the two that
revoke the caller's own session (logout, deleteSession), then those two on their own, so
the first run keeps a live token to the end.

Budget: SCHEMATHESIS_MAX_EXAMPLES examples per operation and phase (25 in `make test`,
about a minute); SCHEMATHESIS_MAX_TIME makes fuzzing and the stateful phase repeat until
that many seconds are spent (`make fuzz`: 200 examples, 10 minutes per run);
SCHEMATHESIS_SEED replays a run. One worker: with two, hypothesis's lambda descriptions
(ast.parse from threads) failed once on Python 3.11 with "AST constructor recursion depth
mismatch", a schemathesis runtime error that has nothing to do with the API.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

from chat import make_user
from contract import CONTRACT, SPEC_PATH

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
REVOKING = ["logout", "deleteSession"]
CONFIG = Path(__file__).with_name("schemathesis.toml")


def run_schemathesis(stack, token: str, seed: int, selection: list[str]) -> tuple[int, str, dict]:
    max_examples = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25")
    # --max-time makes fuzzing repeat until the time is spent: only when asked (make fuzz).
    max_time = os.environ.get("SCHEMATHESIS_MAX_TIME")
    args = [str(SCHEMATHESIS), "--config-file", str(CONFIG), "--no-color", "run", str(SPEC_PATH), "--url", stack["HTTPS_URL"].rstrip("/"),
            "--tls-verify", "false", "--header", f"Authorization: Bearer {token}",
            "--max-examples", max_examples, *(["--max-time", max_time] if max_time else []), "--seed", str(seed),
            "--workers", "1", "--request-timeout", "20", "--output-sanitize", "true", *selection]
    done = subprocess.run(args, capture_output=True, text=True, timeout=int(max_time or 900) + 300,
                          stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    totals = {}
    found = re.search(r"(\d+) generated, (.*)", output)
    if found:
        totals["generated"] = int(found.group(1))
        for number, what in re.findall(r"(\d+) (passed|failed|skipped|found \d+ unique failures)", found.group(2)):
            totals[what.split()[0]] = int(number)
    selected = re.search(r"Selected: (\d+)/(\d+)", output)
    totals["operations"] = selected.group(0) if selected else "?"
    return done.returncode, output, totals


def test_schemathesis_finds_no_5xx_and_no_response_that_breaks_the_contract(https, wait_for_mail, stack):
    seed = int(os.environ.get("SCHEMATHESIS_SEED") or random.randrange(1, 2**31))
    results = []
    for label, selection in (
        ("all but the session-revoking operations",
         [arg for op in REVOKING for arg in ("--exclude-operation-id", op)]),
        ("logout and deleteSession",
         [arg for op in REVOKING for arg in ("--include-operation-id", op)]),
    ):
        user = make_user(https, wait_for_mail, "Fuzz")
        status, output, totals = run_schemathesis(stack, user.token, seed, selection)
        results.append((label, status, totals))
        assert status == 0, f"schemathesis ({label}, seed {seed}) failed:\n{output[-12000:]}"
        assert totals.get("generated", 0) > 0 and totals.get("passed") == totals["generated"], \
            f"schemathesis ({label}) ran nothing or not everything passed: {totals}\n{output[-4000:]}"
    for label, _, totals in results:
        CONTRACT.notes.append(f"schemathesis ({label}; seed {seed}, "
                              f"{os.environ.get('SCHEMATHESIS_MAX_EXAMPLES', '25')} examples/operation): "
                              f"{totals['operations']} operations, {totals['generated']} generated, "
                              f"{totals['passed']} passed, {totals.get('skipped', 0)} skipped")
