#!/usr/bin/env bash
# Bundles the SPA into web/dist (served by nginx when web/dist/index.html exists):
#   web/dist/assets/main-HASH.js and app-HASH.css (content-hashed, cached for a year)
#   web/dist/index.html (references them; nginx sends it with no-cache)
# React and ReactDOM come from Debian (node-react, node-react-dom in /usr/share/nodejs),
# esbuild from Debian too. Idempotent: builds into a fresh folder and swaps it in.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

command -v esbuild >/dev/null || { echo "web/build.sh: esbuild not found (apt-get install esbuild)" >&2; exit 1; }
for pkg in react react-dom scheduler; do
  [[ -d /usr/share/nodejs/$pkg ]] || { echo "web/build.sh: /usr/share/nodejs/$pkg missing (apt-get install node-react node-react-dom)" >&2; exit 1; }
done

out=dist.new
rm -rf "$out"
mkdir -p "$out/assets"
NODE_PATH=/usr/share/nodejs esbuild src/main.jsx src/app.css \
  --bundle --minify --jsx=automatic --target=es2019 \
  --define:process.env.NODE_ENV='"production"' \
  --entry-names='[name]-[hash]' --outdir="$out/assets" --log-level=warning

js=$(cd "$out/assets" && ls main-*.js)
css=$(cd "$out/assets" && ls app-*.css)
[[ -n $js && -n $css ]] || { echo "web/build.sh: bundle missing" >&2; exit 1; }

cat >"$out/index.html" <<HTML
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>swiftchat</title>
<link rel="stylesheet" href="/assets/$css">
<script defer src="/assets/$js"></script>
</head>
<body>
<div id="root"></div>
<noscript>swiftchat needs JavaScript.</noscript>
</body>
</html>
HTML

rm -rf dist.old
[[ -d dist ]] && mv dist dist.old
mv "$out" dist
rm -rf dist.old
echo "web/build.sh: web/dist/index.html -> assets/$js, assets/$css"
