#!/usr/bin/env bash
# Quality checks of the Debian package (what `make deb-check` runs):
#   1. lintian: no errors (warnings and infos are listed; overrides in
#      debian/swiftchat.lintian-overrides, each with its reason)
#   2. systemd-analyze verify: the units as installed (the package unpacked over the
#      host's unit folder), the default instances of the templates included; any
#      message fails
#   3. (not with --quick) a clean Debian 12 chroot (debootstrap minbase + systemd, not
#      running): the package's dependencies, then a file-list snapshot; install the
#      PREVIOUS build, upgrade to this one, remove, reinstall, purge, install again and
#      purge again, with checks after each step; every maintainer script must succeed
#      and nothing may be left after a purge (compared with the snapshot)
#   4. (not with --quick or --no-services) in the same chroot, in network and PID
#      namespaces of its own: PostgreSQL and RabbitMQ installed and running, then the
#      package: postinst must create the PostgreSQL role and database and the RabbitMQ
#      user (with the password of AMQP_URL); FCGIApp, started as the service would be,
#      must apply the migrations over peer authentication; a reinstall must change
#      nothing; purge keeps the database (data, not package state)
#
#   scripts/deb-check.sh [--build] [--quick] [--no-services] [--deb FILE] [--prev-deb FILE] [--keep]
#     --build      run scripts/deb-build.sh first (make deb)
#     --quick      lintian and systemd-analyze only (about 30 s)
#     --no-services  skip step 4 (it downloads PostgreSQL and RabbitMQ into the chroot)
#     --deb F      the package to check (default dist/swiftchat_<changelog version>_<arch>.deb)
#     --prev-deb F the package to upgrade from (default: dist/prev/..., this tree built as
#                  <changelog version>~prev, built when missing; give the last released
#                  .deb to test a real upgrade)
#     --keep       keep the chroot (its path is printed)
#
# Needs root (debootstrap, chroot), lintian, debootstrap, systemd (systemd-analyze) and the
# network to a Debian mirror (DEBIAN_MIRROR, default http://deb.debian.org/debian). The
# bootstrapped base and the downloaded .debs are cached in DEB_CHECK_CACHE (default
# .deb-cache/); without it everything is fetched again (a few minutes more).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"
export PATH=$PATH:/opt/swift/usr/bin

BUILD=0 QUICK=0 KEEP=0 SERVICES=1 DEB="" PREV_DEB=""
while (($#)); do
  case $1 in
    --build) BUILD=1 ;;
    --quick) QUICK=1 ;;
    --keep) KEEP=1 ;;
    --no-services) SERVICES=0 ;;
    --deb) DEB=$2; shift ;;
    --prev-deb) PREV_DEB=$2; shift ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "deb-check: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm
CACHE=${DEB_CHECK_CACHE:-$REPO_ROOT/.deb-cache}
ARCH=$(dpkg --print-architecture)
CHANGELOG_VERSION=$(dpkg-parsechangelog -l debian/changelog -S Version)
FAILS=0
T0=$SECONDS

say() { printf 'deb-check: %s\n' "$*"; }
die() { printf 'deb-check: error: %s\n' "$*" >&2; exit 1; }
ok() { printf '  ok    %s\n' "$*"; }
bad() { printf '  FAIL  %s\n' "$*"; FAILS=$((FAILS + 1)); }
# check DESCRIPTION CMD...: one assertion.
check() {
  local what=$1
  shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
step_time() { printf '  (%s: %d s)\n' "$1" $((SECONDS - $2)); }

if ((BUILD)); then
  scripts/deb-build.sh
fi
[[ -n $DEB ]] || DEB=dist/swiftchat_${CHANGELOG_VERSION}_${ARCH}.deb
[[ -f $DEB ]] || die "$DEB not found: run make deb first (or --build)"
DEB=$(realpath "$DEB")
VERSION=$(dpkg-deb -f "$DEB" Version)
say "checking $DEB ($(du -h "$DEB" | cut -f1); installed $(dpkg-deb -f "$DEB" Installed-Size) KiB)"

# ------------------------------------------------------------------------ lintian
# apt_ensure PKG...: installs what is missing (scripts/apt-ensure.sh; uses say and die).
source "$REPO_ROOT/scripts/apt-ensure.sh"
apt_ensure lintian systemd
((QUICK)) || apt_ensure debootstrap

lintian_check() {
  local t=$SECONDS changes=${DEB%.deb}.changes target out
  target=$DEB
  [[ -f $changes ]] && target=$changes
  say "lintian $(basename "$target")"
  out=$(lintian --display-info --display-experimental --pedantic --show-overrides --fail-on error \
    "$target" 2>&1) && rc=0 || rc=$?
  # Tags with their counts (the overridden ones are marked O:).
  printf '%s\n' "$out" | grep -E '^[EWIPXO]: ' | sed -E 's/^([A-Z]): [^ ]+: ([^ ]+).*/\1: \2/' |
    sort | uniq -c | sed 's/^/    /'
  local e w i o
  e=$(printf '%s\n' "$out" | grep -c '^E: ' || true)
  w=$(printf '%s\n' "$out" | grep -c '^W: ' || true)
  i=$(printf '%s\n' "$out" | grep -c '^I: ' || true)
  o=$(printf '%s\n' "$out" | grep -c '^O: ' || true)
  say "lintian: $e errors, $w warnings, $i info, $o overridden"
  if ((rc == 0 && e == 0)); then ok "lintian: no errors"; else
    printf '%s\n' "$out" | grep -E '^E: ' | sed 's/^/    /'
    bad "lintian: errors (exit $rc)"
  fi
  step_time lintian "$t"
}

# ------------------------------------------------------------ systemd-analyze verify
# The units as the package installs them, over a copy of the host's unit folder (for
# sysinit.target and friends); ExecStart= paths are checked inside that root, so the
# binaries are there too. Unknown keys only warn: any output fails the check.
units_check() {
  local t=$SECONDS root out
  command -v systemd-analyze >/dev/null || die "systemd-analyze not found (apt-get install systemd)"
  root=$(mktemp -d "${TMPDIR:-/tmp}/swiftchat-units.XXXXXX")
  dpkg-deb -x "$DEB" "$root"
  cp -an /lib/systemd/system/. "$root/lib/systemd/system/"
  local units=(swiftchat.target swiftchat-worker.service swiftchat-fcgi@1.service
    swiftchat-fcgi@2.service swiftchat-relay@8101.service)
  say "systemd-analyze verify ${units[*]}"
  if out=$(systemd-analyze verify --root="$root" "${units[@]}" 2>&1) && [[ -z $out ]]; then
    ok "systemd-analyze verify: no messages"
  else
    printf '%s\n' "$out" | sed 's/^/    /'
    bad "systemd-analyze verify"
  fi
  # The target must want every default instance, and the nginx site must list them.
  local wants site=$root/etc/nginx/sites-available/swiftchat
  wants=$(sed -n 's/^Wants=//p' "$root/lib/systemd/system/swiftchat.target")
  check "swiftchat.target wants fcgi@1 fcgi@2 relay@8101 worker" \
    test "$wants" = "swiftchat-fcgi@1.service swiftchat-fcgi@2.service swiftchat-relay@8101.service swiftchat-worker.service"
  check "nginx site lists /run/swiftchat/fcgi-1.sock, fcgi-2.sock and 127.0.0.1:8101" \
    bash -c "grep -q 'unix:/run/swiftchat/fcgi-1.sock' '$site' && grep -q 'unix:/run/swiftchat/fcgi-2.sock' '$site' && grep -q '127.0.0.1:8101' '$site'"
  rm -rf "$root"
  step_time systemd-analyze "$t"
}

lintian_check
units_check

if ((QUICK)); then
  ((FAILS == 0)) || die "$FAILS check(s) failed"
  say "quick checks passed ($((SECONDS - T0)) s)"
  exit 0
fi

# ------------------------------------------------------------------ the chroot cycle
((EUID == 0)) || die "the chroot cycle needs root"
command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"

if [[ -z $PREV_DEB ]]; then
  PREV_DEB=dist/prev/swiftchat_${CHANGELOG_VERSION}~prev_${ARCH}.deb
  if [[ ! -f $PREV_DEB ]]; then
    say "no previous build: building this tree as ${CHANGELOG_VERSION}~prev"
    DEB_VERSION=${CHANGELOG_VERSION}~prev DEB_OUT_DIR=dist/prev DEB_COMPRESSION=${DEB_COMPRESSION:-gzip} \
      scripts/deb-build.sh
  fi
fi
[[ -f $PREV_DEB ]] || die "$PREV_DEB not found"
PREV_DEB=$(realpath "$PREV_DEB")
PREV_VERSION=$(dpkg-deb -f "$PREV_DEB" Version)
dpkg --compare-versions "$PREV_VERSION" lt "$VERSION" ||
  die "previous build $PREV_VERSION is not older than $VERSION"

mkdir -p "$CACHE/archives/partial"
WORK=$(mktemp -d /var/tmp/swiftchat-chroot.XXXXXX)
ROOT=$WORK/root
cleanup() {
  # Mounts live in a private mount namespace per command (unshare): nothing is mounted
  # under $ROOT here, so deleting it cannot reach the host's /proc or /dev.
  if ((KEEP)); then say "chroot kept in $ROOT"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# The base system: debootstrap once, then a cached tarball.
base_tar=$CACHE/$SUITE-$ARCH-minbase-systemd.tar
t=$SECONDS
if [[ -f $base_tar ]]; then
  say "chroot: unpacking the cached base ($base_tar)"
  mkdir -p "$ROOT"
  tar -xpf "$base_tar" -C "$ROOT"
else
  say "chroot: debootstrap --variant=minbase $SUITE from $MIRROR (cached afterwards in $CACHE)"
  debootstrap --variant=minbase --include=systemd,ca-certificates --cache-dir="$CACHE/archives" \
    "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
  cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
  # What a package build chroot has: services are never started inside it.
  printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
  chmod 755 "$ROOT/usr/sbin/policy-rc.d"
  rm -f "$ROOT"/var/cache/apt/archives/*.deb
  tar -cpf "$base_tar.tmp" -C "$ROOT" . && mv "$base_tar.tmp" "$base_tar"
fi
step_time "base system" "$t"

# in_root CMD...: run CMD in the chroot, with /proc, /sys, /dev and the .deb cache mounted
# in a mount namespace of its own (the mounts vanish when CMD ends).
in_root() {
  unshare --mount --propagation private /bin/sh -c '
    r=$1; c=$2; shift 2
    mount -t proc proc "$r/proc" && mount -t sysfs sysfs "$r/sys" &&
    mount --rbind /dev "$r/dev" && mount --bind "$c" "$r/var/cache/apt/archives" &&
    exec chroot "$r" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 HOME=/root "$@"' sh "$ROOT" "$CACHE/archives" "$@" </dev/null
}
apt_in_root() { in_root apt-get -q -y -o Dpkg::Use-Pty=0 -o APT::Install-Recommends=false "$@"; }

# run_step NAME CMD...: a package operation; its output goes to $WORK/NAME.log; a failing
# maintainer script fails it (apt/dpkg exit non-zero).
run_step() {
  local name=$1 t=$SECONDS rc=0
  shift
  "$@" >"$WORK/$name.log" 2>&1 || rc=$?
  if ((rc == 0)) && ! grep -qE 'dpkg: error|subprocess .* returned error|Errors were encountered' "$WORK/$name.log"; then
    ok "$name: exit 0, no maintainer script error ($((SECONDS - t)) s)"
  else
    sed 's/^/    | /' "$WORK/$name.log" | tail -n 40
    bad "$name: exit $rc"
    die "stopping after a failed package operation (logs in $WORK; --keep keeps them)"
  fi
}

# Files of the whole system (not /proc, /sys, /dev, /run, /tmp, apt's caches and logs,
# dpkg's own database) with type, mode and owner; the account files by content.
snapshot() {
  in_root /bin/sh -c '
    find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \
      -o -path /var/cache/apt -o -path /var/lib/apt/lists -o -path /var/lib/dpkg \
      -o -path /var/cache/debconf -o -path /var/log/apt -o -path /var/log/dpkg.log \
      -o -path /var/log/alternatives.log -o -path /etc/ld.so.cache -o -path /root \
      -o -path "/etc/*-" \) -prune -o -printf "%p %y %m %u:%g\n" | LC_ALL=C sort
    for f in /etc/passwd /etc/group /etc/shadow /etc/gshadow; do
      printf "%s sha256:%s\n" "$f" "$(sed "s/:[0-9]*:[0-9]*:[0-9]*:[0-9]*:[0-9]*:[0-9]*:[0-9]*\$//" "$f" | sha256sum | cut -c1-16)"
    done'
}
compare_snapshot() {
  local label=$1 now
  now=$(snapshot)
  if [[ $now == "$BASELINE" ]]; then
    ok "$label: the file list equals the pre-install snapshot (no leftover, nothing missing)"
  else
    { diff <(printf '%s\n' "$BASELINE") <(printf '%s\n' "$now") || true; } | sed 's/^/    /' | head -n 60
    bad "$label: files differ from the pre-install snapshot"
  fi
}

conf_key() { in_root sed -n "s/^$1=//p" /etc/swiftchat/swiftchat.conf; }
stat_is() { [[ $(in_root stat -c '%U:%G %a' "$1" 2>/dev/null) == "$2" ]]; }
exists() { in_root test -e "$1"; }
absent() { ! in_root test -e "$1" && ! in_root test -L "$1"; }
pkg_status() { in_root dpkg-query -W -f='${Status} ${Version}' swiftchat 2>/dev/null || true; }

# ---- dependencies, then the snapshot
t=$SECONDS
t_deps=$SECONDS
say "chroot: apt-get update; the package's dependencies (Depends only)"
mkdir -p "$ROOT/tmp/debs"
cp "$PREV_DEB" "$ROOT/tmp/debs/prev.deb"
cp "$DEB" "$ROOT/tmp/debs/current.deb"
run_step apt-update apt_in_root update
run_step dependencies apt_in_root satisfy "$(dpkg-deb -f "$DEB" Depends), $(dpkg-deb -f "$PREV_DEB" Depends)"
step_time dependencies "$t_deps"
BASELINE=$(snapshot)

# Predicates for the checks below (they run in this shell; in_root reaches the chroot).
user_ok() { in_root sh -c 'getent passwd swiftchat | grep -q ":/var/lib/swiftchat:/usr/sbin/nologin$" && getent group swiftchat >/dev/null'; }
www_data_in_group() { in_root sh -c 'id -nG www-data | tr " " "\n" | grep -qx swiftchat'; }
state_dirs_ok() { stat_is /var/lib/swiftchat "swiftchat:swiftchat 750" && stat_is /var/log/swiftchat "swiftchat:swiftchat 750"; }
secret_ok() { [[ $(conf_key JWT_SECRET) =~ ^[0-9a-f]{64}$ ]]; }
secret_not_shipped() { ! dpkg-deb --fsys-tarfile "$DEB" | grep -aq "$JWT" && ! dpkg-deb --fsys-tarfile "$PREV_DEB" | grep -aq "$JWT"; }
amqp_ok() { [[ $(conf_key AMQP_URL) =~ ^amqp://swiftchat:[0-9a-f]{48}@127\.0\.0\.1:5672/%2f$ ]]; }
not_conffile() { ! dpkg-deb -I "$DEB" conffiles | grep -q swiftchat.conf; }
explained() { grep -q 'createdb -O swiftchat swiftchat' "$WORK/install-prev.log" && grep -q 'rabbitmqctl add_user swiftchat' "$WORK/install-prev.log"; }
site_not_enabled() { exists /etc/nginx/sites-available/swiftchat && absent /etc/nginx/sites-enabled/swiftchat; }
libs_ok() {
  local out
  out=$(in_root ldd "/usr/lib/swiftchat/bin/$1") || return 1
  ! grep -q 'not found' <<<"$out" && ! grep -q libswift <<<"$out"
}
# Starts (Swift runtime and all) as the service user and refuses a missing config with
# EX_CONFIG (78), which systemd does not restart forever.
runs_ok() {
  local out rc=0
  out=$(in_root runuser -u swiftchat -- env SWIFTCHAT_CONFIG=/nonexistent "/usr/lib/swiftchat/bin/$1" 2>&1) || rc=$?
  [[ $rc == 78 && $out == *'cannot read config file /nonexistent'* ]] || { echo "    exit $rc: $out"; return 1; }
}
verify_in_root() {
  local out
  out=$(in_root systemd-analyze verify swiftchat.target swiftchat-worker.service swiftchat-fcgi@1.service \
    swiftchat-fcgi@2.service swiftchat-relay@8101.service 2>&1) && [[ -z $out ]] || { printf '%s\n' "$out" | sed 's/^/    /'; return 1; }
}
no_prompt() {
  ! grep -q 'Configuration file' "$WORK/upgrade.log" &&
    ! in_root sh -c 'ls /etc/swiftchat/*.dpkg-* /etc/nginx/sites-available/*.dpkg-*' >/dev/null 2>&1
}
removed_ok() {
  absent /usr/lib/swiftchat && absent /usr/share/swiftchat && absent /lib/systemd/system/swiftchat.target &&
    absent /lib/systemd/system/swiftchat-fcgi@.service
}
kept_ok() {
  exists /etc/swiftchat/swiftchat.conf && exists /var/lib/swiftchat && exists /var/log/swiftchat &&
    in_root getent passwd swiftchat >/dev/null && [[ $(conf_key JWT_SECRET) == "$JWT" ]]
}
edit_kept() { in_root grep -q '^# operator: kept across upgrades' /etc/swiftchat/swiftchat.conf; }
not_installed() { [[ -z $(in_root dpkg-query -W -f='${Status}' swiftchat 2>/dev/null | grep -v not-installed) ]]; }
user_gone() { in_root sh -c '! getent passwd swiftchat && ! getent group swiftchat' >/dev/null; }
new_secret() { secret_ok && [[ $(conf_key JWT_SECRET) != "$JWT" ]]; }

# ---- 1. install the previous build
say "chroot: install $PREV_VERSION (previous build)"
run_step install-prev apt_in_root install /tmp/debs/prev.deb
check "installed: $PREV_VERSION" test "$(pkg_status)" = "install ok installed $PREV_VERSION"
check "system user and group swiftchat (home /var/lib/swiftchat, nologin)" user_ok
check "www-data is in group swiftchat (FastCGI sockets)" www_data_in_group
check "/etc/swiftchat root:swiftchat 750" stat_is /etc/swiftchat "root:swiftchat 750"
check "/etc/swiftchat/swiftchat.conf root:swiftchat 640" stat_is /etc/swiftchat/swiftchat.conf "root:swiftchat 640"
check "/var/lib/swiftchat and /var/log/swiftchat swiftchat:swiftchat 750" state_dirs_ok
JWT=$(conf_key JWT_SECRET)
AMQP=$(conf_key AMQP_URL)
check "JWT_SECRET generated (64 hex)" secret_ok
check "JWT_SECRET is in neither package" secret_not_shipped
check "AMQP password generated (48 hex, no CHANGE-ME)" amqp_ok
check "swiftchat.conf is not a dpkg conffile (made by postinst from the template)" not_conffile
check "postinst explained the PostgreSQL and RabbitMQ set-up (neither runs here)" explained
check "enabled: swiftchat.target in multi-user.target.wants" \
  exists /etc/systemd/system/multi-user.target.wants/swiftchat.target
check "enabled: swiftchat-worker.service in swiftchat.target.wants" \
  exists /etc/systemd/system/swiftchat.target.wants/swiftchat-worker.service
check "nginx site in sites-available, not enabled" site_not_enabled
for b in FCGIApp WSRelay Worker; do
  check "$b: every shared library found, no Swift runtime library needed (ldd)" libs_ok "$b"
  check "$b: runs as swiftchat, exits 78 on a missing config" runs_ok "$b"
done
check "systemd-analyze verify of the installed units in the chroot: no messages" verify_in_root
# The site, enabled with a throw-away certificate, passes `nginx -t` with Debian's nginx
# (then the certificate and the link go again).
if command -v openssl >/dev/null; then
  mkdir -p "$ROOT/etc/ssl/swiftchat"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=chat.example.org \
    -keyout "$ROOT/etc/ssl/swiftchat/privkey.pem" -out "$ROOT/etc/ssl/swiftchat/fullchain.pem" >/dev/null 2>&1
  ln -s ../sites-available/swiftchat "$ROOT/etc/nginx/sites-enabled/swiftchat"
  check "nginx -t with the site enabled (and a throw-away certificate)" in_root nginx -t -q
  rm -rf "$ROOT/etc/ssl/swiftchat" "$ROOT/etc/nginx/sites-enabled/swiftchat"
  # nginx -t made its temp folders, which nginx's own first start would make: not ours.
  for d in body fastcgi proxy scgi uwsgi; do
    grep -q "^/var/lib/nginx/$d " <<<"$BASELINE" || rm -rf "$ROOT/var/lib/nginx/$d"
  done
fi

# An operator's edit must survive upgrades.
in_root sh -c 'echo "# operator: kept across upgrades" >>/etc/swiftchat/swiftchat.conf'

# ---- 2. upgrade to this build
say "chroot: upgrade to $VERSION"
run_step upgrade apt_in_root install /tmp/debs/current.deb
check "installed: $VERSION" test "$(pkg_status)" = "install ok installed $VERSION"
check "JWT_SECRET unchanged by the upgrade" test "$(conf_key JWT_SECRET)" = "$JWT"
check "AMQP_URL unchanged by the upgrade" test "$(conf_key AMQP_URL)" = "$AMQP"
check "the operator's edit kept" edit_kept
check "no conffile prompt, no .dpkg-* files" no_prompt

# ---- 3. remove: programs go, config and state stay
say "chroot: remove"
run_step remove apt_in_root remove swiftchat
check "status: config-files" test "$(pkg_status)" = "deinstall ok config-files $VERSION"
check "programs, data files and units removed" removed_ok
check "config kept (same JWT_SECRET), state and log folders kept, user kept" kept_ok
check "nginx site (conffile) kept" exists /etc/nginx/sites-available/swiftchat

# ---- 4. reinstall over the kept config
say "chroot: install $VERSION again"
run_step reinstall apt_in_root install /tmp/debs/current.deb
check "installed: $VERSION" test "$(pkg_status)" = "install ok installed $VERSION"
check "the kept config is used as it was (JWT_SECRET, the operator's edit)" kept_ok
check "  ... and the operator's edit" edit_kept

# ---- 5. purge: nothing left
say "chroot: purge"
# A site link an operator made must not survive the purge either.
ln -s ../sites-available/swiftchat "$ROOT/etc/nginx/sites-enabled/swiftchat"
run_step purge apt_in_root purge swiftchat
check "status: not installed" not_installed
check "user and group swiftchat removed" user_gone
compare_snapshot "after purge"

# ---- 6. a fresh install of this build, then purge
say "chroot: fresh install of $VERSION, then purge"
run_step install-fresh apt_in_root install /tmp/debs/current.deb
check "installed: $VERSION, a new JWT_SECRET" new_secret
run_step purge-fresh apt_in_root purge swiftchat
compare_snapshot "after the second purge"

say "chroot cycle: $((SECONDS - t)) s after the base system was ready"

# ---- 7. with PostgreSQL and RabbitMQ running on the host (the chroot)
if ((SERVICES)); then
  t=$SECONDS
  say "chroot: PostgreSQL and RabbitMQ running, then install $VERSION"
  cp "$REPO_ROOT/scripts/deb-check-services.sh" "$ROOT/tmp/services-check.sh"
  # Downloaded here: the scenario's network namespace has no way out.
  run_step download-services apt_in_root install --download-only postgresql rabbitmq-server
  # Own network namespace (only its loopback: no port of this machine is touched) and
  # PID namespace (every daemon started inside dies with it).
  rc=0
  unshare --mount --propagation private --net --pid --fork /bin/sh -c '
    r=$1; c=$2
    ip link set lo up &&
    mount -t proc proc "$r/proc" && mount -t sysfs sysfs "$r/sys" &&
    mount --rbind /dev "$r/dev" && mount --bind "$c" "$r/var/cache/apt/archives" &&
    chroot "$r" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 HOME=/root /bin/bash /tmp/services-check.sh' \
    sh "$ROOT" "$CACHE/archives" </dev/null >"$WORK/services.log" 2>&1 || rc=$?
  grep -E '^  (ok|FAIL) ' "$WORK/services.log" || true
  if ((rc != 0)) || grep -q '^  FAIL ' "$WORK/services.log"; then
    grep -vE '^  (ok|FAIL) ' "$WORK/services.log" | tail -n 40 | sed 's/^/    | /'
    bad "services scenario (exit $rc)"
  fi
  step_time "services scenario" "$t"
fi
((FAILS == 0)) || die "$FAILS check(s) failed"
say "all checks passed ($((SECONDS - T0)) s)"
