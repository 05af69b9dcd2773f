# Sourced by scripts/deb-build.sh and scripts/deb-check.sh (which define say and die).
# apt_ensure PKG...: installs what is missing (as root; otherwise says what to install).
apt_ensure() {
  local missing=() p
  for p in "$@"; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == *"ok installed" ]] || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  ((EUID == 0)) || die "missing packages: ${missing[*]} (apt-get install them)"
  say "installing ${missing[*]}"
  { apt-get -o DPkg::Lock::Timeout=300 update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
      --no-install-recommends "${missing[@]}"; } >/dev/null || die "apt-get install ${missing[*]} failed"
}
