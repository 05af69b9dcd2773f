#!/usr/bin/env python3
"""Accounts benchmark (run by hand): argon2id hashes/s, login throughput, and the
throughput of authenticated GET /api/me beside the trivial /api/ping, through nginx over
TLS, all in one run against a running stack.

    .venv/bin/python bench/auth.py                       # the stack of `make run`
    STACK_ENV=.run/test/stack.env .venv/bin/python bench/auth.py --seconds 10

Login runs are made with as many users as client threads, so the per-email login limit
(which counts concurrent attempts) is not what is measured. Users are created through the
API and marked verified directly in PostgreSQL (a benchmark shortcut, not a test)."""

import argparse
import concurrent.futures as cf
import os
import shlex
import statistics
import subprocess
import time
import uuid
from pathlib import Path

import psycopg2
import requests
import urllib3

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
REPO = Path(__file__).resolve().parents[1]


def stack_env(path):
    env = {}
    for line in Path(path).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = (shlex.split(v) or [""])[0]
    return env


def wrk(url, seconds, connections, headers=()):
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for h in headers:
        args += ["-H", h]
    out = subprocess.run(args + [url], capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = next(float(l.split()[1]) for l in out.splitlines() if l.startswith("Requests/sec"))
    p99 = next((l.split()[1] for l in out.splitlines() if l.strip().startswith("99%")), "?")
    errors = [l.strip() for l in out.splitlines() if "Non-2xx" in l or "Socket errors" in l]
    return rps, p99, errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=16, help="concurrent login clients (= users)")
    ap.add_argument("--connections", type=int, default=64)
    opts = ap.parse_args()
    env = stack_env(os.environ.get("STACK_ENV", REPO / ".run/dev/stack.env"))
    base = env["HTTPS_URL"].rstrip("/")

    hashes = subprocess.run([str(REPO / ".build/release/Bench"), "argon2", str(min(opts.seconds, 5)), "2"],
                            capture_output=True, text=True, timeout=120).stdout.strip()

    password = "bench-password-123"
    users = []
    db = psycopg2.connect(env["PG_DSN"])
    db.autocommit = True
    for _ in range(opts.threads):
        email = f"bench-{uuid.uuid4().hex[:12]}@example.test"
        r = requests.post(base + "/api/auth/register", json={"email": email, "password": password}, verify=False, timeout=30)
        r.raise_for_status()
        with db.cursor() as c:
            c.execute("UPDATE users SET email_verified = true WHERE email_lower = lower(%s)", (email,))
        users.append(email)

    def login_loop(email, deadline):
        s = requests.Session()
        s.verify = False
        lat, errors = [], 0
        while time.monotonic() < deadline:
            t = time.monotonic()
            r = s.post(base + "/api/auth/login", json={"email": email, "password": password}, timeout=30, verify=False)
            lat.append(time.monotonic() - t)
            errors += r.status_code != 200
        return lat, errors

    deadline = time.monotonic() + opts.seconds
    start = time.monotonic()
    with cf.ThreadPoolExecutor(opts.threads) as pool:
        results = list(pool.map(lambda e: login_loop(e, deadline), users))
    elapsed = time.monotonic() - start
    lat = sorted(x for r in results for x in r[0])
    login_errors = sum(r[1] for r in results)

    token = requests.post(base + "/api/auth/login", json={"email": users[0], "password": password},
                          verify=False, timeout=30).json()["token"]
    ping_rps, ping_p99, ping_err = wrk(base + "/api/ping", opts.seconds, opts.connections)
    me_rps, me_p99, me_err = wrk(base + "/api/me", opts.seconds, opts.connections, [f"Authorization: Bearer {token}"])

    print(hashes)
    print(f"POST /api/auth/login, {opts.threads} clients: {len(lat) / elapsed:.1f} logins/s, "
          f"p50 {statistics.median(lat) * 1000:.0f} ms, p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.0f} ms, errors {login_errors}")
    print(f"GET /api/ping (baseline), wrk -c{opts.connections}: {ping_rps:.0f} req/s, p99 {ping_p99}")
    print(f"GET /api/me (JWT + Redis session + PostgreSQL), wrk -c{opts.connections}: {me_rps:.0f} req/s, p99 {me_p99}")
    print(f"ratio /api/me / /api/ping: {me_rps / ping_rps:.2f}")
    for e in ping_err + me_err:
        print("errors:", e)


if __name__ == "__main__":
    main()
