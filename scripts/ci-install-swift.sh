#!/usr/bin/env bash
# Installs the swift.org toolchain for Debian 12 into a prefix (CI; a developer machine
# already has /opt/swift). Verifies the tarball's signature with swift.org's keys.
#   scripts/ci-install-swift.sh VERSION PREFIX     e.g. 6.3.1 /opt/swift
set -euo pipefail
version=${1:?version}
prefix=${2:?prefix}
if [[ -x $prefix/usr/bin/swift ]] && "$prefix/usr/bin/swift" --version 2>/dev/null | grep -q "Swift version $version "; then
  echo "swift $version already in $prefix"
  exit 0
fi
base=https://download.swift.org/swift-$version-release/debian12/swift-$version-RELEASE
tarball=swift-$version-RELEASE-debian12.tar.gz
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL --retry 3 -o "$tmp/$tarball" "$base/$tarball"
curl -fsSL --retry 3 -o "$tmp/$tarball.sig" "$base/$tarball.sig"
if command -v gpg >/dev/null; then
  export GNUPGHOME=$tmp/gnupg
  mkdir -m 700 "$GNUPGHOME"
  curl -fsSL --retry 3 https://swift.org/keys/all-keys.asc | gpg --batch --quiet --import
  gpg --batch --verify "$tmp/$tarball.sig" "$tmp/$tarball"
else
  echo "gpg not installed: signature not checked" >&2
fi
mkdir -p "$prefix"
tar -xzf "$tmp/$tarball" -C "$prefix" --strip-components=1
"$prefix/usr/bin/swift" --version
