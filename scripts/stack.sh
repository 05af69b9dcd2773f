#!/usr/bin/env bash
# swiftchat local stack manager: installs the tools, builds, and runs the whole stack
# (PostgreSQL, Redis, RabbitMQ, MongoDB or SecantusDB, an SMTP sink, the Swift processes
# and nginx) as plain processes under one folder, on loopback only.
#
#   scripts/stack.sh setup | build | start (up) | stop (down) | status | logs
#   scripts/stack.sh start-service|stop-service|kill-service NAME
#       NAME: postgres redis rabbitmq mongo smtp worker relay-N fcgi-N nginx
#   scripts/stack.sh render-site      re-render nginx/swiftchat.site (production copy)
#
# STACK_DIR (default .run/dev) holds everything a stack owns: data, logs/, pids/, the
# generated config and secrets, the TLS certificate. Several stacks can run side by side,
# each in its own folder with its own ports. Ports are chosen once and kept in
# $STACK_DIR/ports.env, so a restart (of the stack or of one service) reuses them.
#
# Environment knobs (start): FCGI_PROCESSES (2), WS_RELAYS (1), HTTPS_PORT, HTTP_PORT,
# PG_PORT, REDIS_PORT, AMQP_PORT, AMQP_DIST_PORT, EPMD_PORT, MONGO_PORT, SMTP_PORT,
# WS_PORT_BASE, MONGO_URL (an existing MongoDB: then none is started), MONGO_DB,
# SWIFTCHAT_BIN_DIR (default .build/release; kept for restarts), START_APPS=0 (data services and nginx only),
# LOG_LEVEL, SWIFTCHAT_CONF_<KEY>=VALUE (adds KEY=VALUE to the generated config),
# MONGO_TEST_COMMANDS=1 (SecantusDB accepts configureFailPoint: `make test` only, never a
# stack others can reach; kept for restarts).
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true   # "&" in a replacement stays literal

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$REPO_ROOT/.venv
PG_BIN=/usr/lib/postgresql/15/bin
RABBIT_BIN=/usr/lib/rabbitmq/bin
NGINX=/usr/sbin/nginx
PY=/usr/bin/python3

APT_PACKAGES=(libfcgi-dev libpq-dev libmongoc-dev libhiredis-dev librabbitmq-dev libssl-dev
  libcurl4-openssl-dev libargon2-dev postgresql redis-server rabbitmq-server nginx wrk openssl
  python3-venv node-react node-react-dom esbuild chromium chromium-driver)

PORT_KEYS=(HTTPS_PORT HTTP_PORT PG_PORT REDIS_PORT AMQP_PORT AMQP_DIST_PORT EPMD_PORT
  MONGO_PORT SMTP_PORT OAUTH_PORT)

say() { printf '%s\n' "$*"; }
warn() { printf 'stack: %s\n' "$*" >&2; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }
is_root() { [[ $EUID -eq 0 ]]; }

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

# ---------------------------------------------------------------------------- setup

as_root() {
  if is_root; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root for: $*"
  fi
}

cmd_setup() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == *"ok installed" ]] || missing+=("$p")
  done
  if ((${#missing[@]})); then
    say "setup: installing ${missing[*]}"
    # Packaged services must not start system-wide instances: the stack runs its own.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
      printf '#!/bin/sh\n# added by swiftchat stack.sh setup while installing\nexit 101\n' |
        as_root tee "$policy" >/dev/null
      as_root chmod 755 "$policy"
      made_policy=1
    fi
    local rc=0
    { as_root apt-get update -q &&
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"; } || rc=$?
    ((made_policy)) && as_root rm -f "$policy"
    ((rc == 0)) || die "apt-get failed ($rc)"
  fi

  if [[ ! -x $VENV/bin/python ]]; then
    say "setup: creating $VENV"
    "$PY" -m venv "$VENV"
  fi
  local req=$REPO_ROOT/requirements-dev.txt stamp=$VENV/.requirements.stamp want
  want="$("$VENV/bin/python" -V 2>&1) $(sha256sum "$req" | cut -d' ' -f1)"
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    say "setup: pip install -r requirements-dev.txt"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$req"
    printf '%s\n' "$want" >"$stamp"
  fi
}

cmd_build() {
  cd "$REPO_ROOT"
  swift build -c release
}

# ------------------------------------------------------------------- stack folder

init_stack() {
  local dir=${STACK_DIR:-.run/dev}
  [[ $dir == /* ]] || dir=$PWD/$dir
  STACK_DIR=$(realpath -m "$dir")
  STACK_NAME=$(basename "$STACK_DIR" | tr -c 'A-Za-z0-9_\n-' '-')
  IS_DEV=0
  [[ $STACK_DIR == "$REPO_ROOT/.run/dev" ]] && IS_DEV=1
  LOG_DIR=$STACK_DIR/logs
  PID_DIR=$STACK_DIR/pids
  MAIL_DIR=$STACK_DIR/mail
  CONFIG_FILE=$STACK_DIR/swiftchat.conf
  PORTS_FILE=$STACK_DIR/ports.env
  SECRETS_FILE=$STACK_DIR/secrets.env
  STACK_ENV_FILE=$STACK_DIR/stack.env
  TLS_DIR=$STACK_DIR/tls
  NGINX_PREFIX=$STACK_DIR/nginx
  PG_DATA=$STACK_DIR/pg/data
  RMQ_DIR=$STACK_DIR/rabbitmq
  RABBITMQ_NODENAME=swiftchat-$STACK_NAME@localhost
  # Unix socket paths are limited to 107 bytes: a deep stack folder gets its sockets in a
  # short folder under /tmp named after it.
  RUNTIME_DIR=$STACK_DIR
  if ((${#STACK_DIR} > 70)); then
    RUNTIME_DIR=/tmp/swiftchat-$(printf '%s' "$STACK_DIR" | sha256sum | cut -c1-12)
  fi
  SOCK_DIR=$RUNTIME_DIR/sock
  PG_SOCKDIR=$RUNTIME_DIR/pgsock
}

make_dirs() {
  mkdir -p "$STACK_DIR" "$LOG_DIR" "$PID_DIR" "$MAIL_DIR" "$SOCK_DIR" "$TLS_DIR" \
    "$NGINX_PREFIX/temp" "$RMQ_DIR/home" "$STACK_DIR/redis"
  # Services that run as other users (postgres, nginx workers) must reach their folders.
  chmod 755 "$STACK_DIR" "$SOCK_DIR"
  [[ $STACK_DIR == "$REPO_ROOT/.run/"* ]] && chmod 755 "$REPO_ROOT/.run"
  chmod 700 "$TLS_DIR" "$RMQ_DIR/home"
}

lock_stack() {
  exec 9>"$STACK_DIR/.lock"
  flock -w 300 9 || die "another stack.sh is working on $STACK_DIR"
}

# --------------------------------------------------------------------- processes

svc_log() {
  case $1 in
    nginx) echo "$LOG_DIR/nginx-error.log" ;;
    epmd) echo "$LOG_DIR/rabbitmq.log" ;;
    *) echo "$LOG_DIR/$1.log" ;;
  esac
}

pidfile() { printf '%s/%s.pid' "$PID_DIR" "$1"; }

read_pid() {
  local f
  f=$(pidfile "$1")
  [[ -s $f ]] || return 1
  local pid
  pid=$(head -n1 "$f" | tr -dc '0-9')
  [[ -n $pid ]] && printf '%s' "$pid"
}

# True when PID is a live process of this stack: its command line names the stack folder,
# or it carries the SWIFTCHAT_STACK marker that spawn() gives every process, or it is the
# epmd recorded for this stack. A reused pid of some other process never matches.
owned_pid() {
  local pid=$1 cmd
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
  [[ -n $cmd ]] || return 1   # a zombie
  [[ $cmd == *"$STACK_DIR"* ]] && return 0
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == epmd && $2 == epmd ]] && return 0
  local environ
  environ=$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ") || return 1
  [[ $'\n'$environ$'\n' == *$'\n'"SWIFTCHAT_STACK=$STACK_DIR"$'\n'* ]]
}

# Prints the pid of a running service of this stack; fails when it is not running.
svc_pid() {
  local pid
  pid=$(read_pid "$1") || return 1
  owned_pid "$pid" "$1" || return 1
  printf '%s' "$pid"
}
running() { svc_pid "$1" >/dev/null; }

# spawn NAME LOGFILE CMD...: start a long-running process in its own session, detached
# from this shell, with the stack marker in its environment; records its pid. A
# background job of a script starts with SIGINT and SIGQUIT ignored: env puts every
# signal back to its default so the process sees what it would under systemd.
spawn() {
  local name=$1 log=$2
  shift 2
  SWIFTCHAT_STACK=$STACK_DIR setsid env --default-signal "$@" >>"$log" 2>&1 </dev/null 9>&- &
  printf '%s\n' "$!" >"$(pidfile "$name")"
}

# wait_for SECONDS CMD...: poll CMD every 0.1 s until it succeeds.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
http_ok() { curl -fsS -o /dev/null --connect-timeout 1 --max-time 2 "$1" 2>/dev/null; }

show_log() {
  local f=$1
  [[ -f $f ]] || return 0
  warn "last lines of $f:"
  tail -n 25 "$f" | sed 's/^/    /' >&2
}

# Fails unless the service NAME (spawned as PID) is alive; shows its log tail.
check_alive() {
  local name=$1 log=$2
  running "$name" && return 0
  show_log "$log"
  die "$name exited during start-up"
}

terminate() {
  local name=$1 pid=$2
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_for 10 eval "! owned_pid $pid $name"; then
    warn "$name (pid $pid) did not stop within 10 s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    wait_for 5 eval "! owned_pid $pid $name" || warn "$name (pid $pid) is still there"
  fi
}

# ----------------------------------------------------------------------- ports

port_free() {
  "$PY" -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

port_owner() {
  case $1 in
    HTTPS_PORT | HTTP_PORT) echo nginx ;;
    PG_PORT) echo postgres ;;
    REDIS_PORT) echo redis ;;
    AMQP_PORT | AMQP_DIST_PORT) echo rabbitmq ;;
    EPMD_PORT) echo epmd ;;
    MONGO_PORT) echo mongo ;;
    SMTP_PORT) echo smtp ;;
    OAUTH_PORT) echo oauth ;;
    RELAY_PORT_*) echo "relay-${1#RELAY_PORT_}" ;;
  esac
}

declare -A SAVED=() ENV_OVERRIDE=() PORT=()

capture_env() {
  local k
  for k in "${PORT_KEYS[@]}" WS_PORT_BASE FCGI_PROCESSES WS_RELAYS OAUTH_STANDIN MONGO_TEST_COMMANDS MONGO_URL MONGO_DB \
    SWIFTCHAT_BIN_DIR; do
    [[ -n ${!k-} ]] && ENV_OVERRIDE[$k]=${!k}
  done
  return 0
}

load_saved() {
  [[ -f $PORTS_FILE ]] || return 0
  local k v
  while IFS='=' read -r k v; do
    [[ $k =~ ^[A-Z_0-9]+$ ]] || continue
    v=${v#\'}
    SAVED[$k]=${v%\'}
  done <"$PORTS_FILE"
}

default_port() {
  local k=$1 i
  if ((IS_DEV)); then
    case $k in
      HTTPS_PORT) echo 8443 ;; HTTP_PORT) echo 8080 ;; PG_PORT) echo 25432 ;;
      REDIS_PORT) echo 26379 ;; AMQP_PORT) echo 25672 ;; AMQP_DIST_PORT) echo 25673 ;;
      EPMD_PORT) echo 24369 ;; MONGO_PORT) echo 27117 ;; SMTP_PORT) echo 2525 ;;
      OAUTH_PORT) echo 8190 ;;
      RELAY_PORT_*) i=${k#RELAY_PORT_}; echo $((${ENV_OVERRIDE[WS_PORT_BASE]:-8101} + i - 1)) ;;
    esac
    return
  fi
  local n
  for n in "${!PORT_KEYS[@]}"; do
    [[ ${PORT_KEYS[$n]} == "$k" ]] && { echo $((PORT_BASE + n)); return; }
  done
  i=${k#RELAY_PORT_}
  echo $((${ENV_OVERRIDE[WS_PORT_BASE]:-$((PORT_BASE + 20))} + i - 1))
}

# resolve_ports MODE [SERVICE]: fill PORT[] from the environment (start only), the saved
# choice, or the defaults. MODE=start moves a port that something else took to the next
# free one (and says so); MODE=strict (single-service restart) refuses to move SERVICE's
# ports; MODE=load takes the saved ports as they are (stop, status).
resolve_ports() {
  local mode=$1 only=${2:-} k want p owner taken=" "
  # A random base keeps test stacks off each other's ports; dev has fixed defaults. It stays
  # below the kernel's ephemeral range, where any outgoing connection may hold a port.
  local low=32768
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  ((low > 12100)) || low=61000
  PORT_BASE=$((10000 + (RANDOM % ((low - 10100) / 100)) * 100))
  local keys=("${PORT_KEYS[@]}") i
  for ((i = 1; i <= WS_RELAYS; i++)); do keys+=("RELAY_PORT_$i"); done
  for k in "${keys[@]}"; do
    want=${SAVED[$k]:-}
    [[ $mode == start && -n ${ENV_OVERRIDE[$k]:-} ]] && want=${ENV_OVERRIDE[$k]}
    [[ -n $want ]] || want=$(default_port "$k")
    owner=$(port_owner "$k")
    if [[ $mode == load ]] || { [[ $mode == strict ]] && [[ $owner != "$only" ]]; }; then
      PORT[$k]=$want
      continue
    fi
    if [[ $k == MONGO_PORT && -n $EXTERNAL_MONGO_URL ]]; then
      PORT[$k]=$want
      continue
    fi
    if running "$owner"; then
      if [[ -n ${SAVED[$k]:-} && $want != "${SAVED[$k]}" ]]; then
        warn "$owner is running on ${SAVED[$k]}; ignoring $k=$want until it is restarted"
        want=${SAVED[$k]}
      fi
      PORT[$k]=$want
      taken+="$want "
      continue
    fi
    p=$want
    if [[ $mode == strict ]]; then
      port_free "$p" || die "port $p ($k) of $owner is in use by another process"
    else
      while [[ $taken == *" $p "* ]] || ! port_free "$p"; do p=$((p + 1)); done
      [[ $p == "$want" ]] || say "port $want ($k) is taken; using $p"
    fi
    PORT[$k]=$p
    taken+="$p "
  done
}

save_ports() {
  local k tmp=$PORTS_FILE.tmp
  {
    echo "# Ports, process counts and binaries chosen for this stack; restarts reuse them."
    for k in $(printf '%s\n' "${!PORT[@]}" | sort); do echo "$k=${PORT[$k]}"; done
    echo "FCGI_PROCESSES=$FCGI_PROCESSES"
    echo "WS_RELAYS=$WS_RELAYS"
    echo "OAUTH_STANDIN=$OAUTH_STANDIN"
    echo "MONGO_TEST_COMMANDS=$MONGO_TEST_COMMANDS"
    echo "EXTERNAL_MONGO_URL='$EXTERNAL_MONGO_URL'"
    echo "MONGO_DB=$MONGO_DB"
    echo "BIN_DIR=$BIN_DIR"
  } >"$tmp"
  mv "$tmp" "$PORTS_FILE"
}

# settle MODE [SERVICE]: decide counts, ports and derived values for this invocation.
settle() {
  local mode=$1 only=${2:-}
  load_saved
  if [[ $mode == start ]]; then
    FCGI_PROCESSES=${ENV_OVERRIDE[FCGI_PROCESSES]:-${SAVED[FCGI_PROCESSES]:-2}}
    WS_RELAYS=${ENV_OVERRIDE[WS_RELAYS]:-${SAVED[WS_RELAYS]:-1}}
    OAUTH_STANDIN=${ENV_OVERRIDE[OAUTH_STANDIN]:-${SAVED[OAUTH_STANDIN]:-0}}
    MONGO_TEST_COMMANDS=${ENV_OVERRIDE[MONGO_TEST_COMMANDS]:-${SAVED[MONGO_TEST_COMMANDS]:-0}}
    EXTERNAL_MONGO_URL=${ENV_OVERRIDE[MONGO_URL]:-}
    local default_db=swiftchat
    [[ -n $EXTERNAL_MONGO_URL ]] && ((!IS_DEV)) && default_db=swiftchat_$STACK_NAME
    MONGO_DB=${ENV_OVERRIDE[MONGO_DB]:-$default_db}
    BIN_DIR=${ENV_OVERRIDE[SWIFTCHAT_BIN_DIR]:-$REPO_ROOT/.build/release}
    [[ $BIN_DIR == /* ]] || BIN_DIR=$REPO_ROOT/$BIN_DIR
  else
    [[ -f $PORTS_FILE ]] || die "no stack in $STACK_DIR yet: run start first"
    FCGI_PROCESSES=${SAVED[FCGI_PROCESSES]:-2}
    WS_RELAYS=${SAVED[WS_RELAYS]:-1}
    OAUTH_STANDIN=${SAVED[OAUTH_STANDIN]:-0}
    MONGO_TEST_COMMANDS=${SAVED[MONGO_TEST_COMMANDS]:-0}
    EXTERNAL_MONGO_URL=${SAVED[EXTERNAL_MONGO_URL]:-}
    MONGO_DB=${SAVED[MONGO_DB]:-swiftchat}
    BIN_DIR=${SAVED[BIN_DIR]:-$REPO_ROOT/.build/release}
  fi
  [[ $FCGI_PROCESSES =~ ^[1-9][0-9]*$ ]] || die "FCGI_PROCESSES must be a positive number"
  [[ $WS_RELAYS =~ ^[1-9][0-9]*$ ]] || die "WS_RELAYS must be a positive number"
  [[ $MONGO_TEST_COMMANDS =~ ^[01]$ ]] || die "MONGO_TEST_COMMANDS must be 0 or 1"
  resolve_ports "$mode" "$only"
  [[ $mode == start ]] && save_ports
  derive
}

derive() {
  local https=${PORT[HTTPS_PORT]} i
  HTTPS_URL=https://127.0.0.1:$https/
  HTTP_URL=http://127.0.0.1:${PORT[HTTP_PORT]}/
  PUBLIC_URL=https://127.0.0.1:$https
  [[ $https == 443 ]] && { PUBLIC_URL=https://127.0.0.1; HTTPS_URL=$PUBLIC_URL/; }
  if [[ -n $EXTERNAL_MONGO_URL ]]; then
    MONGO_URL=$EXTERNAL_MONGO_URL
  else
    MONGO_URL="mongodb://127.0.0.1:${PORT[MONGO_PORT]}/?connectTimeoutMS=3000&serverSelectionTimeoutMS=3000&socketTimeoutMS=5000"
  fi
  RELAY_PORTS=$(for ((i = 1; i <= WS_RELAYS; i++)); do printf '%s,' "${PORT[RELAY_PORT_$i]}"; done)
  RELAY_PORTS=${RELAY_PORTS%,}
  FCGI_SOCKETS=$(for ((i = 1; i <= FCGI_PROCESSES; i++)); do printf '%s,' "$SOCK_DIR/fcgi-$i.sock"; done)
  FCGI_SOCKETS=${FCGI_SOCKETS%,}
}

# -------------------------------------------------------------- secrets, TLS, config

ensure_secrets() {
  if [[ ! -s $SECRETS_FILE ]]; then
    (
      umask 077
      {
        echo "# Generated once for this stack; kept across restarts."
        echo "JWT_SECRET=$(openssl rand -hex 32)"
        echo "PG_PASSWORD=$(openssl rand -hex 16)"
        echo "AMQP_PASSWORD=$(openssl rand -hex 16)"
      } >"$SECRETS_FILE.tmp"
      mv "$SECRETS_FILE.tmp" "$SECRETS_FILE"
    )
  fi
  # shellcheck source=/dev/null
  . "$SECRETS_FILE"
  [[ $JWT_SECRET =~ ^[0-9a-f]{64}$ ]] || die "bad JWT_SECRET in $SECRETS_FILE"
  PG_DSN=postgresql://swiftchat:$PG_PASSWORD@127.0.0.1:${PORT[PG_PORT]}/swiftchat
  AMQP_URL=amqp://swiftchat:$AMQP_PASSWORD@127.0.0.1:${PORT[AMQP_PORT]}/%2f
}

ensure_tls() {
  [[ -s $TLS_DIR/cert.pem && -s $TLS_DIR/key.pem ]] && return 0
  say "generating a self-signed certificate in $TLS_DIR"
  openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$TLS_DIR/key.pem.tmp" -out "$TLS_DIR/cert.pem.tmp" 2>/dev/null
  chmod 600 "$TLS_DIR/key.pem.tmp"
  mv "$TLS_DIR/key.pem.tmp" "$TLS_DIR/key.pem"
  mv "$TLS_DIR/cert.pem.tmp" "$TLS_DIR/cert.pem"
}

# The value of a tunable config key: the environment's, else the one this stack's config
# already has (so a later start-service keeps what the first start was given), else $2.
conf_value() {
  local key=$1 fallback=$2 kept
  if [[ -n ${!key-} ]]; then printf '%s' "${!key}"; return; fi
  kept=$(sed -n "s/^$key=//p" "$CONFIG_FILE" 2>/dev/null | tail -1)
  printf '%s' "${kept:-$fallback}"
}

write_config() {
  local retry=500,1000,2000
  ((IS_DEV)) && retry=5000,30000,120000
  local tmp=$CONFIG_FILE.tmp
  (
    umask 077
    cat >"$tmp" <<EOF
# swiftchat configuration of the local stack in $STACK_DIR.
# Written by scripts/stack.sh on every start (secrets are kept in secrets.env); do not edit.
# Format: KEY=VALUE, '#' comments; the environment overrides these keys.
PUBLIC_URL=$PUBLIC_URL
PG_CONNINFO=host=127.0.0.1 port=${PORT[PG_PORT]} dbname=swiftchat user=swiftchat password=$PG_PASSWORD connect_timeout=3
MONGO_URL=$MONGO_URL
MONGO_DB=$MONGO_DB
REDIS_HOST=127.0.0.1
REDIS_PORT=${PORT[REDIS_PORT]}
AMQP_URL=$AMQP_URL
SMTP_URL=smtp://127.0.0.1:${PORT[SMTP_PORT]}
SMTP_FROM=${SMTP_FROM:-swiftchat <noreply@localhost>}
JWT_SECRET=$JWT_SECRET
FCGI_THREADS=${FCGI_THREADS:-16}
WS_HOST=127.0.0.1
MIGRATIONS_DIR=$REPO_ROOT/migrations
LOG_LEVEL=${LOG_LEVEL:-info}
WORKER_RETRY_DELAYS_MS=$(conf_value WORKER_RETRY_DELAYS_MS "$retry")
RATE_LIMIT_LOGIN_PER_EMAIL=$(conf_value RATE_LIMIT_LOGIN_PER_EMAIL "10")
RATE_LIMIT_WINDOW_SECONDS=$(conf_value RATE_LIMIT_WINDOW_SECONDS "900")
EOF
    if ((OAUTH_STANDIN)); then
      # Test stacks only: the three providers point at scripts/oauth_standin.py.
      local p base=http://127.0.0.1:${PORT[OAUTH_PORT]}
      for p in google github yandex; do
        printf 'OAUTH_%s_CLIENT_ID=test-%s-client\nOAUTH_%s_CLIENT_SECRET=test-%s-secret\n' "${p^^}" "$p" "${p^^}" "$p"
      done >>"$tmp"
      cat >>"$tmp" <<EOF
OAUTH_GOOGLE_AUTHORIZE_URL=$base/google/authorize
OAUTH_GOOGLE_TOKEN_URL=$base/google/token
OAUTH_GOOGLE_USERINFO_URL=$base/google/userinfo
OAUTH_GITHUB_AUTHORIZE_URL=$base/github/login/oauth/authorize
OAUTH_GITHUB_TOKEN_URL=$base/github/login/oauth/access_token
OAUTH_GITHUB_USER_URL=$base/github/user
OAUTH_GITHUB_EMAILS_URL=$base/github/user/emails
OAUTH_YANDEX_AUTHORIZE_URL=$base/yandex/authorize
OAUTH_YANDEX_TOKEN_URL=$base/yandex/token
OAUTH_YANDEX_USERINFO_URL=$base/yandex/info
EOF
    fi
    # SWIFTCHAT_CONF_<KEY> overrides: the environment's; without any there, the ones the
    # previous start was given (so a later start-service keeps them).
    local var vars
    vars=$(compgen -v SWIFTCHAT_CONF_ || true)
    echo "# SWIFTCHAT_CONF_ overrides" >>"$tmp"
    if [[ -n $vars ]]; then
      for var in $vars; do
        printf '%s=%s\n' "${var#SWIFTCHAT_CONF_}" "${!var}" >>"$tmp"
      done
    elif [[ -f $CONFIG_FILE ]]; then
      sed -n '/^# SWIFTCHAT_CONF_ overrides$/,$p' "$CONFIG_FILE" | tail -n +2 >>"$tmp"
    fi
  )
  mv "$tmp" "$CONFIG_FILE"
}

shell_quote_value() {
  local v=$1
  if [[ $v =~ ^[A-Za-z0-9_./:@%,+=-]*$ ]]; then printf '%s' "$v"
  else printf "'%s'" "${v//\'/\'\\\'\'}"
  fi
}

write_stack_env() {
  local tmp=$STACK_ENV_FILE.tmp name pid key
  (
    umask 077
    {
      echo "# swiftchat local stack: shell-sourceable facts for tools and tests."
      local kv=(
        "STACK_DIR=$STACK_DIR" "HTTPS_URL=$HTTPS_URL" "HTTP_URL=$HTTP_URL"
        "HTTPS_PORT=${PORT[HTTPS_PORT]}" "HTTP_PORT=${PORT[HTTP_PORT]}"
        "WS_URL=wss://127.0.0.1:${PORT[HTTPS_PORT]}/ws"
        "MAIL_DIR=$MAIL_DIR" "LOG_DIR=$LOG_DIR" "CONFIG_FILE=$CONFIG_FILE"
        "PG_PORT=${PORT[PG_PORT]}" "PG_SOCKDIR=$PG_SOCKDIR" "PG_DSN=$PG_DSN"
        "REDIS_PORT=${PORT[REDIS_PORT]}" "AMQP_PORT=${PORT[AMQP_PORT]}" "AMQP_URL=$AMQP_URL"
        "RABBITMQ_NODENAME=$RABBITMQ_NODENAME" "MONGO_URL=$MONGO_URL" "MONGO_DB=$MONGO_DB"
        "SMTP_PORT=${PORT[SMTP_PORT]}" "RELAY_PORTS=$RELAY_PORTS" "FCGI_SOCKETS=$FCGI_SOCKETS"
        "FCGI_PROCESSES=$FCGI_PROCESSES" "WS_RELAYS=$WS_RELAYS" "JWT_SECRET=$JWT_SECRET")
      ((OAUTH_STANDIN)) && kv+=("OAUTH_STANDIN_URL=http://127.0.0.1:${PORT[OAUTH_PORT]}")
      ((MONGO_TEST_COMMANDS)) && [[ -z $EXTERNAL_MONGO_URL ]] && kv+=("MONGO_TEST_COMMANDS=1")
      for key in "${kv[@]}"; do
        printf '%s=%s\n' "${key%%=*}" "$(shell_quote_value "${key#*=}")"
      done
      for name in $(service_names); do
        pid=$(svc_pid "$name" || true)
        key=PID_$(tr 'a-z-' 'A-Z_' <<<"$name")
        printf '%s=%s\n' "$key" "$pid"
      done
    } >"$tmp"
  )
  mv "$tmp" "$STACK_ENV_FILE"
}

# ----------------------------------------------------------------------- services

service_names() {
  local names=(postgres redis rabbitmq epmd) i
  [[ -z $EXTERNAL_MONGO_URL ]] && names+=(mongo)
  names+=(smtp)
  ((OAUTH_STANDIN)) && names+=(oauth)
  for ((i = 1; i <= FCGI_PROCESSES; i++)); do names+=("fcgi-$i"); done
  for ((i = 1; i <= WS_RELAYS; i++)); do names+=("relay-$i"); done
  names+=(worker nginx)
  printf '%s\n' "${names[@]}"
}

as_pg() {
  if is_root; then (cd / && runuser -u postgres -- "$@" 9>&-)
  else (cd / && "$@" 9>&-)
  fi
}
pg_superuser() { if is_root; then echo postgres; else id -un; fi; }

start_postgres() {
  running postgres && return 0
  mkdir -p "$STACK_DIR/pg" "$PG_SOCKDIR"
  touch "$LOG_DIR/postgres.log"
  if is_root; then
    chown postgres:postgres "$STACK_DIR/pg" "$PG_SOCKDIR" "$LOG_DIR/postgres.log"
    runuser -u postgres -- test -x "$STACK_DIR/pg" ||
      die "user postgres cannot reach $STACK_DIR (a parent folder is not o+x)"
  fi
  if [[ ! -s $PG_DATA/PG_VERSION ]]; then
    say "postgres: initdb $PG_DATA"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U "$(pg_superuser)" -E UTF8 --locale=C.UTF-8 \
      --auth-local=peer --auth-host=scram-sha-256 --no-sync >>"$LOG_DIR/postgres.log" 2>&1 ||
      { show_log "$LOG_DIR/postgres.log"; die "initdb failed"; }
  fi
  # After a kill -9 the old backends take a moment to notice: retry briefly.
  local try
  for try in 1 2 3 4 5; do
    if as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$LOG_DIR/postgres.log" -w -t 30 -s \
      -o "-c listen_addresses=127.0.0.1 -p ${PORT[PG_PORT]} -k $PG_SOCKDIR" start; then
      break
    fi
    ((try < 5)) || { show_log "$LOG_DIR/postgres.log"; die "postgres did not start"; }
    sleep 1
  done
  head -n1 "$PG_DATA/postmaster.pid" >"$(pidfile postgres)"
  pg_bootstrap
}

pg_bootstrap() {
  # Role and database, idempotent; the password follows secrets.env.
  as_pg psql -X -q -h "$PG_SOCKDIR" -p "${PORT[PG_PORT]}" -U "$(pg_superuser)" -d postgres \
    -v ON_ERROR_STOP=1 -v pw="$PG_PASSWORD" >/dev/null <<'SQL' || die "postgres bootstrap failed"
SELECT format('CREATE ROLE swiftchat LOGIN PASSWORD %L', :'pw')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'swiftchat') \gexec
SELECT format('ALTER ROLE swiftchat LOGIN PASSWORD %L', :'pw') \gexec
SELECT 'CREATE DATABASE swiftchat OWNER swiftchat'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'swiftchat') \gexec
SQL
}

stop_postgres() {
  local pid
  pid=$(svc_pid postgres) || return 0
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 20 -s stop ||
    terminate postgres "$pid"
}

start_redis() {
  running redis && return 0
  cat >"$STACK_DIR/redis/redis.conf" <<EOF
# written by scripts/stack.sh; the command line sets the rest
proc-title-template "{title} {listen-addr} {server-mode} {config-file}"
EOF
  spawn redis "$LOG_DIR/redis.log" redis-server "$STACK_DIR/redis/redis.conf" \
    --port "${PORT[REDIS_PORT]}" --bind 127.0.0.1 --dir "$STACK_DIR/redis" \
    --save '' --appendonly no --daemonize no --logfile ''
}
redis_ping() { [[ $(redis-cli -p "${PORT[REDIS_PORT]}" ping 2>/dev/null) == PONG ]]; }
wait_redis() {
  wait_for 15 redis_ping ||
    { show_log "$LOG_DIR/redis.log"; die "redis did not answer"; }
}

rabbit_env() {
  RABBIT_ENV=(HOME="$RMQ_DIR/home"
    RABBITMQ_NODENAME="$RABBITMQ_NODENAME"
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    RABBITMQ_NODE_PORT="${PORT[AMQP_PORT]}"
    RABBITMQ_DIST_PORT="${PORT[AMQP_DIST_PORT]}"
    ERL_EPMD_PORT="${PORT[EPMD_PORT]}"
    ERL_EPMD_ADDRESS=127.0.0.1
    RABBITMQ_MNESIA_BASE="$RMQ_DIR/mnesia"
    RABBITMQ_LOG_BASE="$RMQ_DIR/log"
    RABBITMQ_CONFIG_FILE="$RMQ_DIR/rabbitmq.conf"
    RABBITMQ_ADVANCED_CONFIG_FILE="$RMQ_DIR/advanced.config"
    RABBITMQ_CONF_ENV_FILE="$RMQ_DIR/rabbitmq-env.conf"
    RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_DIR/enabled_plugins"
    RABBITMQ_PID_FILE="$RMQ_DIR/rabbitmq.pid"
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}")
}
rmqctl() { env "${RABBIT_ENV[@]}" "$RABBIT_BIN/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" "$@" 9>&-; }

start_rabbitmq() {
  running rabbitmq && return 0
  rabbit_env
  mkdir -p "$RMQ_DIR/mnesia" "$RMQ_DIR/log"
  echo '[].' >"$RMQ_DIR/enabled_plugins"
  echo '[].' >"$RMQ_DIR/advanced.config"
  echo '# empty: keeps /etc/rabbitmq/rabbitmq-env.conf out of this stack' >"$RMQ_DIR/rabbitmq-env.conf"
  cat >"$RMQ_DIR/rabbitmq.conf" <<'EOF'
# RabbitMQ node of a swiftchat local stack (scripts/stack.sh); ports come from the env.
log.console = true
log.console.level = info
log.file = false
EOF
  rm -f "$RMQ_DIR/rabbitmq.pid"
  spawn rabbitmq "$LOG_DIR/rabbitmq.log" env "${RABBIT_ENV[@]}" "$RABBIT_BIN/rabbitmq-server"
  RABBIT_STARTING=1
}

wait_rabbitmq() {
  [[ ${RABBIT_STARTING:-0} == 1 ]] || return 0
  rabbit_env
  if ! timeout 90 env "${RABBIT_ENV[@]}" "$RABBIT_BIN/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" \
    wait --timeout 90 "$RMQ_DIR/rabbitmq.pid" >/dev/null 2>&1 9>&-; then
    show_log "$LOG_DIR/rabbitmq.log"
    die "rabbitmq did not start"
  fi
  # From now on the pid file names the Erlang VM itself (the launcher is a shell).
  head -n1 "$RMQ_DIR/rabbitmq.pid" >"$(pidfile rabbitmq)"
  local epmd
  epmd=$(ss -Hltnp "sport = :${PORT[EPMD_PORT]}" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2)
  [[ -n $epmd ]] && echo "$epmd" >"$(pidfile epmd)"
  local stamp=$RMQ_DIR/mnesia/.swiftchat-user
  if [[ ! -f $stamp ]]; then
    rmqctl add_user swiftchat "$AMQP_PASSWORD" >/dev/null 2>&1 ||
      rmqctl change_password swiftchat "$AMQP_PASSWORD" >/dev/null
    rmqctl set_permissions -p / swiftchat '.*' '.*' '.*' >/dev/null
    touch "$stamp"
  fi
  RABBIT_STARTING=0
}

stop_rabbitmq() {
  local pid
  if pid=$(svc_pid rabbitmq); then
    rabbit_env
    timeout 40 env "${RABBIT_ENV[@]}" "$RABBIT_BIN/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" \
      stop "$RMQ_DIR/rabbitmq.pid" >/dev/null 2>&1 9>&- || true
    owned_pid "$pid" rabbitmq && terminate rabbitmq "$pid"
  fi
  return 0
}

# epmd (Erlang's port mapper) is started by the node and outlives it.
stop_epmd() {
  local pid
  epmd -port "${PORT[EPMD_PORT]}" -kill >/dev/null 2>&1 9>&- || true
  if pid=$(svc_pid epmd); then terminate epmd "$pid"; fi
  return 0
}

start_mongo() {
  [[ -n $EXTERNAL_MONGO_URL ]] && return 0
  running mongo && return 0
  mkdir -p "$STACK_DIR/mongo"
  [[ -x $VENV/bin/python ]] || die "no $VENV: run scripts/stack.sh setup (make setup)"
  # An explicit (empty) --config keeps SecantusDB from picking up a secantusd.toml from
  # the working folder, ~/.secantus or /etc. --standalone: a plain server, as a single
  # mongod is (the default presents a replica set for change streams, which we don't use).
  # A standalone SecantusDB keeps no oplog at all (checked: local.oplog.rs stays empty), so
  # no insert pays for one and no oplog limits are needed.
  # --enable-test-commands (configureFailPoint) only for `make test` (MONGO_TEST_COMMANDS=1):
  # anyone who can reach the port could otherwise make every command fail.
  local test_commands=()
  ((MONGO_TEST_COMMANDS)) && test_commands=(--enable-test-commands)
  echo '# SecantusDB of a swiftchat local stack: flags on the command line' >"$STACK_DIR/secantusd.toml"
  spawn mongo "$LOG_DIR/mongo.log" "$VENV/bin/python" -m secantus \
    --config "$STACK_DIR/secantusd.toml" --host 127.0.0.1 --port "${PORT[MONGO_PORT]}" \
    --storage-path "$STACK_DIR/mongo" --cache-size 256M \
    --standalone "${test_commands[@]}"
}
wait_mongo() {
  [[ -n $EXTERNAL_MONGO_URL ]] && return 0
  wait_for 30 tcp_open "${PORT[MONGO_PORT]}" ||
    { show_log "$LOG_DIR/mongo.log"; die "mongo (SecantusDB) did not listen"; }
}

start_smtp() {
  running smtp && return 0
  spawn smtp "$LOG_DIR/smtp.log" "$VENV/bin/python" "$REPO_ROOT/scripts/smtp_sink.py" \
    --host 127.0.0.1 --port "${PORT[SMTP_PORT]}" --maildir "$MAIL_DIR"
}
start_oauth() {
  ((OAUTH_STANDIN)) || return 0
  running oauth && return 0
  spawn oauth "$LOG_DIR/oauth.log" "$VENV/bin/python" "$REPO_ROOT/scripts/oauth_standin.py" \
    --host 127.0.0.1 --port "${PORT[OAUTH_PORT]}"
}
wait_oauth() {
  ((OAUTH_STANDIN)) || return 0
  wait_for 15 tcp_open "${PORT[OAUTH_PORT]}" ||
    { show_log "$LOG_DIR/oauth.log"; die "the OAuth stand-in did not listen"; }
}
wait_smtp() {
  wait_for 15 tcp_open "${PORT[SMTP_PORT]}" ||
    { show_log "$LOG_DIR/smtp.log"; die "the SMTP sink did not listen"; }
}

# The Swift processes get a clean environment: the generated config is the whole truth,
# so a variable that happens to be set in the caller's shell cannot override it.
app_env() {
  APP_ENV=(env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="${HOME:-/root}" LANG=C.UTF-8
    SWIFTCHAT_STACK="$STACK_DIR" SWIFTCHAT_CONFIG="$CONFIG_FILE")
}

need_binary() {
  [[ -x $BIN_DIR/$1 ]] || die "$BIN_DIR/$1 is missing: run \`make build\` first (or START_APPS=0 to start without the Swift processes)"
}

start_fcgi() {
  local name=fcgi-$1 sock=$SOCK_DIR/fcgi-$1.sock
  running "$name" && return 0
  need_binary FCGIApp
  rm -f "$sock"
  app_env
  spawn "$name" "$LOG_DIR/$name.log" "${APP_ENV[@]}" FCGI_SOCKET="$sock" "$BIN_DIR/FCGIApp"
  PENDING+=("$name")
}
wait_fcgi() {
  local name=$1 sock=$SOCK_DIR/$1.sock
  wait_for 20 eval "[[ -S '$sock' ]] || ! running '$name'" || true
  check_alive "$name" "$LOG_DIR/$name.log"
  [[ -S $sock ]] || { show_log "$LOG_DIR/$name.log"; die "$name did not create $sock within 20 s"; }
  # nginx workers run as another user: let them connect.
  chmod 666 "$sock"
}

start_relay() {
  local i=$1 name=relay-$1
  running "$name" && return 0
  need_binary WSRelay
  app_env
  spawn "$name" "$LOG_DIR/$name.log" "${APP_ENV[@]}" WS_HOST=127.0.0.1 \
    WS_PORT="${PORT[RELAY_PORT_$i]}" RELAY_ID="relay-$i" "$BIN_DIR/WSRelay"
  PENDING+=("$name")
}
wait_relay() {
  local name=$1 i=${1#relay-}
  local url=http://127.0.0.1:${PORT[RELAY_PORT_$i]}/health
  wait_for 20 eval "http_ok '$url' || ! running '$name'" || true
  check_alive "$name" "$LOG_DIR/$name.log"
  http_ok "$url" || { show_log "$LOG_DIR/$name.log"; die "$name did not answer $url within 20 s"; }
}

start_worker() {
  running worker && return 0
  need_binary Worker
  app_env
  spawn worker "$LOG_DIR/worker.log" "${APP_ENV[@]}" "$BIN_DIR/Worker"
  PENDING+=(worker)
}
wait_worker() {
  # The Worker has no port: it counts as up when it is still alive a moment later.
  sleep 0.5
  check_alive worker "$LOG_DIR/worker.log"
}

spa_root() {
  if [[ -f $REPO_ROOT/web/dist/index.html ]]; then echo "$REPO_ROOT/web/dist"
  else echo "$REPO_ROOT/web/public"
  fi
}

# render_template FILE NAME=VALUE...: replace each @NAME@ with VALUE (values may span lines).
render_template() {
  local text template=$1
  text=$(<"$template")
  shift
  local pair
  for pair in "$@"; do
    text=${text//@${pair%%=*}@/${pair#*=}}
  done
  if LC_ALL=C grep -qE '@[A-Z_]+@' <<<"$text"; then
    LC_ALL=C grep -oE '@[A-Z_]+@' <<<"$text" | sort -u >&2
    die "unrendered tokens in $template"
  fi
  printf '%s\n' "$text"
}

# Who nginx's workers run as: www-data when it can read the SPA and reach the sockets
# (the usual case), root only when a parent folder shuts it out.
nginx_user_directive() {
  if ! is_root; then
    echo "# workers run as the invoking user ($(id -un))"
    return
  fi
  local root
  root=$(spa_root)
  if id www-data >/dev/null 2>&1 &&
    setpriv --reuid=www-data --regid=www-data --clear-groups test -r "$root/index.html" -a -x "$SOCK_DIR" 2>/dev/null; then
    echo "user www-data www-data;"
  else
    warn "www-data cannot read $root or reach $SOCK_DIR: nginx workers run as root"
    echo "user root root;"
  fi
}

render_nginx() {
  local fcgi='' relay='' i
  for ((i = 1; i <= FCGI_PROCESSES; i++)); do
    fcgi+="    server unix:$SOCK_DIR/fcgi-$i.sock max_fails=0;"$'\n'
  done
  for ((i = 1; i <= WS_RELAYS; i++)); do
    relay+="    server 127.0.0.1:${PORT[RELAY_PORT_$i]} max_fails=0;"$'\n'
  done
  local suffix=":${PORT[HTTPS_PORT]}"
  [[ ${PORT[HTTPS_PORT]} == 443 ]] && suffix=
  render_template "$REPO_ROOT/nginx/swiftchat.conf.template" \
    "FCGI_SERVERS=${fcgi%$'\n'}" "RELAY_SERVERS=${relay%$'\n'}" \
    "HTTP_LISTEN=    listen 127.0.0.1:${PORT[HTTP_PORT]};" \
    "HTTPS_LISTEN=    listen 127.0.0.1:${PORT[HTTPS_PORT]} ssl http2;" \
    "SERVER_NAME=localhost 127.0.0.1" "PUBLIC_HOST=127.0.0.1" "HTTPS_PORT_SUFFIX=$suffix" \
    "TLS_CERT=$TLS_DIR/cert.pem" "TLS_KEY=$TLS_DIR/key.pem" "SPA_ROOT=$(spa_root)" \
    >"$NGINX_PREFIX/swiftchat.site.tmp"
  render_template "$REPO_ROOT/nginx/stack-nginx.conf.template" \
    "USER_DIRECTIVE=$(nginx_user_directive)" "PREFIX=$NGINX_PREFIX" "LOG_DIR=$LOG_DIR" \
    "SITE=$NGINX_PREFIX/swiftchat.site" >"$NGINX_PREFIX/nginx.conf.tmp"
}

nginx_cmd() { "$NGINX" -p "$NGINX_PREFIX" -c "$NGINX_PREFIX/nginx.conf" -e "$LOG_DIR/nginx-error.log" "$@"; }

start_nginx() {
  ensure_spa_placeholder
  render_nginx
  local changed=0
  cmp -s "$NGINX_PREFIX/nginx.conf.tmp" "$NGINX_PREFIX/nginx.conf" || changed=1
  cmp -s "$NGINX_PREFIX/swiftchat.site.tmp" "$NGINX_PREFIX/swiftchat.site" || changed=1
  mv "$NGINX_PREFIX/nginx.conf.tmp" "$NGINX_PREFIX/nginx.conf"
  mv "$NGINX_PREFIX/swiftchat.site.tmp" "$NGINX_PREFIX/swiftchat.site"
  nginx_cmd -t -q 9>&- 2>>"$LOG_DIR/nginx-error.log" ||
    { show_log "$LOG_DIR/nginx-error.log"; die "nginx rejected $NGINX_PREFIX/nginx.conf"; }
  local pid
  if pid=$(svc_pid nginx); then
    if ((changed)); then
      say "nginx: configuration changed, reloading"
      kill -HUP "$pid"
    fi
    return 0
  fi
  spawn nginx "$LOG_DIR/nginx-error.log" "$NGINX" -p "$NGINX_PREFIX" -c "$NGINX_PREFIX/nginx.conf" \
    -e "$LOG_DIR/nginx-error.log"
  wait_for 10 eval "curl -ksS -o /dev/null --max-time 2 '$HTTPS_URL' 2>/dev/null || ! running nginx" || true
  check_alive nginx "$LOG_DIR/nginx-error.log"
  curl -ksS -o /dev/null --max-time 2 "$HTTPS_URL" ||
    { show_log "$LOG_DIR/nginx-error.log"; die "nginx does not answer on $HTTPS_URL"; }
}

ensure_spa_placeholder() {
  local f=$REPO_ROOT/web/public/index.html
  [[ -f $f || -f $REPO_ROOT/web/dist/index.html ]] && return 0
  die "$f is missing (the SPA placeholder is part of the repository)"
}

# ------------------------------------------------------------------ subcommands

start_apps() {
  ((${START_APPS:-1})) || { warn "START_APPS=0: not starting the Swift processes"; return 0; }
  write_config
  PENDING=()
  local i name
  for ((i = 1; i <= FCGI_PROCESSES; i++)); do start_fcgi "$i"; done
  for ((i = 1; i <= WS_RELAYS; i++)); do start_relay "$i"; done
  start_worker
  for name in "${PENDING[@]}"; do
    case $name in
      fcgi-*) wait_fcgi "$name" ;;
      relay-*) wait_relay "$name" ;;
      worker) wait_worker ;;
    esac
  done
}

# A Swift process started from a binary that has since been rebuilt (or from another
# SWIFTCHAT_BIN_DIR) is stopped here, so that this start runs the current build.
stop_stale_apps() {
  ((${START_APPS:-1})) || return 0
  local name pid binary exe
  for name in $(service_names); do
    case $name in
      fcgi-*) binary=FCGIApp ;; relay-*) binary=WSRelay ;; worker) binary=Worker ;; *) continue ;;
    esac
    pid=$(svc_pid "$name") || continue
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || continue
    if [[ $exe != "$(realpath -m "$BIN_DIR/$binary")" ]]; then
      say "$name runs ${exe% (deleted)}$([[ $exe == *" (deleted)" ]] && echo ", since rebuilt"): restarting it"
      stop_one "$name"
    fi
  done
}

all_running() {
  local name
  for name in $(service_names); do
    [[ $name == epmd ]] && continue
    if [[ $name == fcgi-* || $name == relay-* || $name == worker ]] && ! ((${START_APPS:-1})); then
      continue
    fi
    running "$name" || return 1
  done
}

summary() {
  local stop_hint="make stop"
  [[ $STACK_DIR == "$REPO_ROOT/.run/"* ]] || stop_hint="STACK_DIR=$STACK_DIR scripts/stack.sh stop"
  cat <<EOF
swiftchat is running
  https URL:   $HTTPS_URL
  http URL:    $HTTP_URL (redirects to https)
  mail folder: $MAIL_DIR
  logs:        $LOG_DIR
  stop with:   $stop_hint
EOF
}

cmd_start() {
  init_stack
  make_dirs
  lock_stack
  capture_env
  settle start
  ensure_secrets
  stop_stale_apps
  if all_running; then
    write_config
    start_nginx   # reloads only if its rendered configuration changed
    write_stack_env
    say "swiftchat is already running in $STACK_DIR"
    summary
    return 0
  fi
  ensure_tls
  # RabbitMQ takes the longest to boot: launch it first and collect it last.
  start_rabbitmq
  start_redis
  start_mongo
  start_smtp
  start_oauth
  start_postgres
  wait_redis
  wait_mongo
  wait_smtp
  wait_oauth
  wait_rabbitmq
  check_alive redis "$LOG_DIR/redis.log"
  [[ -n $EXTERNAL_MONGO_URL ]] || check_alive mongo "$LOG_DIR/mongo.log"
  check_alive smtp "$LOG_DIR/smtp.log"
  start_apps
  start_nginx
  write_stack_env
  summary
}

stop_one() {
  local name=$1 pid
  case $name in
    postgres) stop_postgres ;;
    rabbitmq) stop_rabbitmq ;;
    epmd) stop_epmd ;;
    *) if pid=$(svc_pid "$name"); then terminate "$name" "$pid"; fi ;;
  esac
  rm -f "$(pidfile "$name")"
  [[ $name == fcgi-* ]] && rm -f "$SOCK_DIR/$name.sock"
  return 0
}

# Everything that has a pid file, in reverse start order.
stop_order() {
  local f names=() name
  for f in "$PID_DIR"/*.pid; do
    [[ -e $f ]] && names+=("$(basename "$f" .pid)")
  done
  for name in nginx relay- fcgi- worker oauth smtp mongo rabbitmq epmd redis postgres; do
    printf '%s\n' "${names[@]}" | grep -E "^${name}([0-9]+)?\$" | sort -t- -k2n || true
  done
}

cmd_stop() {
  init_stack
  [[ -d $PID_DIR ]] || { say "no stack in $STACK_DIR"; return 0; }
  lock_stack
  [[ -f $PORTS_FILE ]] && settle load
  local name stopped=0
  for name in $(stop_order); do
    if running "$name"; then
      say "stopping $name"
      stopped=1
    fi
    stop_one "$name"
  done
  # The short socket folder under /tmp of a deep stack folder goes too (empty by now).
  if [[ $RUNTIME_DIR != "$STACK_DIR" ]]; then
    rmdir "$SOCK_DIR" "$PG_SOCKDIR" "$RUNTIME_DIR" 2>/dev/null || true
  fi
  if ((stopped)); then say "stopped the stack in $STACK_DIR"
  else say "nothing was running in $STACK_DIR"
  fi
}

cmd_service() {
  local action=$1 name=$2
  init_stack
  [[ -d $PID_DIR ]] || die "no stack in $STACK_DIR"
  make_dirs
  lock_stack
  case $name in
    postgres | redis | rabbitmq | mongo | smtp | oauth | worker | nginx | relay-[1-9]* | fcgi-[1-9]*) ;;
    *) die "unknown service '$name' (postgres redis rabbitmq mongo smtp oauth worker relay-N fcgi-N nginx)" ;;
  esac
  settle "$([[ $action == start-service ]] && echo strict || echo load)" "$name"
  ensure_secrets
  case $name in
    relay-*) ((${name#relay-} <= WS_RELAYS)) || die "this stack has $WS_RELAYS relay(s)" ;;
    fcgi-*) ((${name#fcgi-} <= FCGI_PROCESSES)) || die "this stack has $FCGI_PROCESSES FastCGI process(es)" ;;
    mongo) [[ -z $EXTERNAL_MONGO_URL ]] || { say "mongo is external ($EXTERNAL_MONGO_URL): nothing to do"; return 0; } ;;
  esac
  local pid
  case $action in
    stop-service)
      stop_one "$name"
      [[ $name == rabbitmq ]] && stop_epmd && rm -f "$(pidfile epmd)"
      say "stopped $name" ;;
    kill-service)
      if pid=$(svc_pid "$name"); then
        kill -KILL "$pid"
        wait_for 5 eval "! owned_pid $pid $name" || true
        say "killed $name (pid $pid)"
      else
        say "$name is not running"
      fi ;;
    start-service)
      if running "$name"; then
        say "$name is already running (pid $(svc_pid "$name"))"
      else
        PENDING=()
        case $name in
          postgres) start_postgres ;;
          redis) start_redis; wait_redis ;;
          rabbitmq) start_rabbitmq; wait_rabbitmq ;;
          mongo) start_mongo; wait_mongo ;;
          smtp) start_smtp; wait_smtp ;;
          oauth) start_oauth; wait_oauth ;;
          fcgi-*) write_config; start_fcgi "${name#fcgi-}"; wait_fcgi "$name" ;;
          relay-*) write_config; start_relay "${name#relay-}"; wait_relay "$name" ;;
          worker) write_config; start_worker; wait_worker ;;
          nginx) ensure_tls; start_nginx ;;
        esac
        check_alive "$name" "$(svc_log "$name")"
        say "started $name (pid $(svc_pid "$name"))"
      fi ;;
  esac
  write_stack_env
}

cmd_status() {
  init_stack
  if [[ ! -f $STACK_DIR/ports.env ]]; then
    say "no stack in $STACK_DIR"
    return 0
  fi
  settle load
  say "stack $STACK_DIR"
  local name pid where state any=0
  for name in $(service_names); do
    case $name in
      postgres) where="127.0.0.1:${PORT[PG_PORT]} (socket dir $PG_SOCKDIR)" ;;
      redis) where="127.0.0.1:${PORT[REDIS_PORT]}" ;;
      rabbitmq) where="127.0.0.1:${PORT[AMQP_PORT]} node $RABBITMQ_NODENAME (dist ${PORT[AMQP_DIST_PORT]})" ;;
      epmd) where="127.0.0.1:${PORT[EPMD_PORT]}" ;;
      mongo) where="127.0.0.1:${PORT[MONGO_PORT]} (SecantusDB)" ;;
      smtp) where="127.0.0.1:${PORT[SMTP_PORT]} -> $MAIL_DIR" ;;
      oauth) where="http://127.0.0.1:${PORT[OAUTH_PORT]} (stand-in providers)" ;;
      fcgi-*) where="$SOCK_DIR/$name.sock" ;;
      relay-*) where="127.0.0.1:${PORT[RELAY_PORT_${name#relay-}]}" ;;
      worker) where="-" ;;
      nginx) where="$HTTPS_URL and $HTTP_URL" ;;
    esac
    if pid=$(svc_pid "$name"); then state=running; any=1; else state=stopped; pid=-; fi
    printf '  %-10s %-8s pid %-8s %s\n' "$name" "$state" "$pid" "$where"
  done
  [[ -n $EXTERNAL_MONGO_URL ]] && printf '  %-10s %-8s %s\n' mongo external "$EXTERNAL_MONGO_URL"
  say "logs: $LOG_DIR"
  ((any)) && say "env:  $STACK_ENV_FILE"
  return 0
}

# Production copy of the site, rendered from the same template with the paths that the
# systemd units and the Debian layout use.
cmd_render_site() {
  local out=$REPO_ROOT/nginx/swiftchat.site
  {
    echo "# GENERATED from nginx/swiftchat.conf.template by \`scripts/stack.sh render-site\`."
    echo "# Install as /etc/nginx/sites-available/swiftchat, set server_name and the"
    echo "# certificate paths, and list one upstream line per swiftchat-fcgi@/relay@ instance."
    echo
    render_template "$REPO_ROOT/nginx/swiftchat.conf.template" \
      "FCGI_SERVERS=    server unix:/run/swiftchat/fcgi-1.sock max_fails=0;
    server unix:/run/swiftchat/fcgi-2.sock max_fails=0;" \
      "RELAY_SERVERS=    server 127.0.0.1:8101 max_fails=0;" \
      "HTTP_LISTEN=    listen 80;
    listen [::]:80;" \
      "HTTPS_LISTEN=    listen 443 ssl http2;
    listen [::]:443 ssl http2;" \
      "SERVER_NAME=chat.example.org" "PUBLIC_HOST=chat.example.org" "HTTPS_PORT_SUFFIX=" \
      "TLS_CERT=/etc/ssl/swiftchat/fullchain.pem" "TLS_KEY=/etc/ssl/swiftchat/privkey.pem" \
      "SPA_ROOT=/usr/share/swiftchat/web"
  } >"$out.tmp"
  mv "$out.tmp" "$out"
  say "wrote $out"
}

main() {
  local cmd=${1:-help}
  [[ $# -gt 0 ]] && shift
  case $cmd in
    setup) cmd_setup ;;
    build) cmd_build ;;
    start | up) cmd_start ;;
    stop | down) cmd_stop ;;
    status) cmd_status ;;
    logs) init_stack; say "$LOG_DIR" ;;
    start-service | stop-service | kill-service)
      [[ $# -ge 1 ]] || die "usage: $0 $cmd NAME"
      cmd_service "$cmd" "$1" ;;
    render-site) cmd_render_site ;;
    help | -h | --help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
