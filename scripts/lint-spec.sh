#!/usr/bin/env bash
# Lint openapi/openapi.yaml with Spectral (spectral:oas + .spectral.yaml) and Redocly
# (recommended + .redocly.lint-ignore.yaml). Fails on any error OR warning.
# The linters are pinned in package.json / package-lock.json and installed with `npm ci`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SPEC=openapi/openapi.yaml
BIN=node_modules/.bin
# No update checks or telemetry: CI reaches only package registries.
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true

echo "+ spectral lint $SPEC"
"$BIN/spectral" lint "$SPEC" --ruleset .spectral.yaml --fail-severity=warn

echo "+ redocly lint $SPEC"
output="$("$BIN/redocly" lint "$SPEC" --format=stylish 2>&1)" || { echo "$output"; exit 1; }
echo "$output"
# redocly exits 0 on warnings; the bar is zero warnings too.
if grep -Eq '[0-9]+ warnings?' <<<"$output" && ! grep -Eq '(^|[^0-9])0 warnings' <<<"$output"; then
    echo "redocly: warnings are failures here" >&2
    exit 1
fi
