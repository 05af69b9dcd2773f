#!/usr/bin/env bash
# Builds the Debian package (what `make deb` runs): copies the source tree into
# dist/build/swiftchat (so dpkg-buildpackage writes its ../ outputs inside dist/ and never
# next to the checkout), resolves the Swift packages there (the only step that may use the
# network or the SwiftPM mirror), then runs `dpkg-buildpackage -us -uc -b` and moves the
# .deb, .buildinfo and .changes to dist/.
#
#   scripts/deb-build.sh
#
# Environment: DEB_COMPRESSION (xz by default, the smallest; gzip takes ~30 s instead of
# minutes, for checks), DEB_VERSION (default: the top of debian/changelog; e.g. 0.2.0 from a v0.2.0
# tag, or 0.1.0~prev for the upgrade test), DEB_OUT_DIR (default dist), DEB_STAGE_DIR
# (default dist/build; its SwiftPM folder .build-deb is kept between builds, so a rebuild
# is incremental). Needs: swift (PATH or /opt/swift/usr/bin), dpkg-dev, debhelper, rsync
# and the Build-Depends of debian/control.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"
export PATH=$PATH:/opt/swift/usr/bin

OUT_DIR=${DEB_OUT_DIR:-dist}
STAGE_PARENT=${DEB_STAGE_DIR:-dist/build}
mkdir -p "$OUT_DIR" "$STAGE_PARENT"
OUT_DIR=$(realpath "$OUT_DIR")
STAGE_PARENT=$(realpath "$STAGE_PARENT")
STAGE=$STAGE_PARENT/swiftchat

say() { printf 'deb-build: %s\n' "$*"; }
die() { printf 'deb-build: error: %s\n' "$*" >&2; exit 1; }

# apt_ensure PKG...: installs what is missing (scripts/apt-ensure.sh; uses say and die).
source "$REPO_ROOT/scripts/apt-ensure.sh"

command -v swift >/dev/null || die "swift not found (PATH or /opt/swift/usr/bin)"
apt_ensure dpkg-dev debhelper rsync
# Build-Depends from debian/control (what dpkg-checkbuilddeps reports missing).
unmet=$(dpkg-checkbuilddeps 2>&1 | sed -n 's/.*Unmet build dependencies: //p' | sed -E 's/\([^)]*\)//g; s/\| *[^ ]*//g')
# shellcheck disable=SC2086
[[ -z $unmet ]] || apt_ensure $unmet

started=$SECONDS
# The tracked and untracked-but-not-ignored files, plus Package.resolved (ignored by git,
# but it pins the Swift packages that `make test` used). The SwiftPM folder in the copy
# survives (excluded, so --delete leaves it alone).
rsync -a --delete \
  --exclude=/.git --exclude='/.build*' --exclude=/dist --exclude=/debian/swiftchat \
  --include=/Package.resolved --filter=':- .gitignore' \
  "$REPO_ROOT/" "$STAGE/"

version=$(dpkg-parsechangelog -l "$STAGE/debian/changelog" -S Version)
if [[ -n ${DEB_VERSION:-} && $DEB_VERSION != "$version" ]]; then
  [[ $DEB_VERSION =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "DEB_VERSION '$DEB_VERSION' is not a Debian version"
  # A changelog entry for this build only (in the copy), so dpkg sees the version.
  {
    printf 'swiftchat (%s) bookworm; urgency=medium\n\n  * Build of %s.\n\n' "$DEB_VERSION" \
      "$(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null || echo 'the working tree')"
    printf ' -- %s  %s\n\n' "$(dpkg-parsechangelog -l "$STAGE/debian/changelog" -S Maintainer)" "$(date -R)"
    cat "$STAGE/debian/changelog"
  } >"$STAGE/debian/changelog.new"
  mv "$STAGE/debian/changelog.new" "$STAGE/debian/changelog"
  version=$DEB_VERSION
fi

say "swiftchat $version: resolving Swift packages"
(cd "$STAGE" && swift package --scratch-path "$STAGE/.build-deb" resolve)

arch=$(dpkg --print-architecture)
rm -f "$STAGE_PARENT"/swiftchat_*
say "dpkg-buildpackage -us -uc -b in $STAGE"
(cd "$STAGE" && dpkg-buildpackage -us -uc -b)

base=swiftchat_${version#*:}_$arch
for f in "$STAGE_PARENT/$base.deb" "$STAGE_PARENT/$base.buildinfo" "$STAGE_PARENT/$base.changes"; do
  [[ -f $f ]] || die "missing $f"
  mv -f "$f" "$OUT_DIR/"
done
say "built $OUT_DIR/$base.deb ($(du -h "$OUT_DIR/$base.deb" | cut -f1), $((SECONDS - started)) s)"
