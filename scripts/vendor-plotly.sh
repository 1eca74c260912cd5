#!/usr/bin/env bash
# Re-create specsweep/report/vendor/ from the npm registry: the scatter+bar partial bundle of
# plotly.js (`plotly.js-basic-dist-min`), gzip'd, with its licence and a record of where it came
# from. The page (specsweep/report/page.py) inlines the .gz as base64 and unpacks it in the browser.
#   scripts/vendor-plotly.sh [VERSION]   (default: the plotly.js the installed plotly package bundles)
# `npm pack` checks the tarball against the registry's integrity hash; gzip -n leaves out the name
# and time stamp, so the same tarball gives the same .gz bytes.
set -euo pipefail
pkg="plotly.js-basic-dist-min"
file="plotly-basic.min.js"
version="${1:-$(python3 -c 'from plotly.offline import get_plotlyjs_version as v; print(v())')}"
out="specsweep/report/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "${pkg}@${version}" > pack.name)
tarball="$work/$(tail -n 1 "$work/pack.name")"
tar xzf "$tarball" -C "$work" package/LICENSE "package/$file" package/package.json
got="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$work/package/package.json")"
[ "$got" = "$version" ] || { echo "npm gave ${pkg} ${got}, not ${version}" >&2; exit 1; }

mkdir -p "$out"
gzip -9 -n -c "$work/package/$file" > "$out/$file.gz"
cp "$work/package/LICENSE" "$out/LICENSE"
sha() { sha256sum "$1" | cut -d' ' -f1; }
tar_sha="$(sha "$tarball")"
js_sha="$(sha "$work/package/$file")"
gz_sha="$(sha "$out/$file.gz")"
licence="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("license", "?"))' "$work/package/package.json")"

cat > "$out/plotly.json" <<EOF
{
  "package": "${pkg}",
  "version": "${version}",
  "license": "${licence}",
  "file": "${file}",
  "tarball_sha256": "${tar_sha}",
  "file_sha256": "${js_sha}",
  "gz_sha256": "${gz_sha}"
}
EOF

cat > "$out/README.md" <<EOF
# Vendored plotly.js (partial bundle)

The report page (\`specsweep plot\`) draws only scatter and bar traces, so it inlines plotly.js's
basic partial bundle (scatter, bar, pie) instead of the full 4.8 MB build: gzip'd here, base64 in
the page, unpacked in the browser with \`DecompressionStream('gzip')\` (Chrome 80+, Firefox 113+,
Safari 16.4+). Re-create this folder with \`scripts/vendor-plotly.sh [VERSION]\`.

- npm package: \`${pkg}\` ${version} (licence ${licence}, see LICENSE)
- tarball \`${pkg}-${version}.tgz\` sha256 \`${tar_sha}\`
- \`${file}\` sha256 \`${js_sha}\` (what the browser runs)
- \`${file}.gz\` (gzip -9 -n) sha256 \`${gz_sha}\`

\`plotly.json\` holds the same facts for the code (specsweep/report/bundle.py checks the .gz
against them before inlining it).
EOF
echo "vendored ${pkg} ${version} in ${out}: $(stat -c %s "$out/$file.gz") bytes gzip'd"
