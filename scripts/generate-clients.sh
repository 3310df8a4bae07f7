#!/usr/bin/env bash
# Generate the client SDKs from the contract into build/clients/<target> (generated, never
# committed), each with a stock generator at its default options: only the input, the output
# and names are set (Python: sdk/python/config.yaml). No template or output is patched.
#
#   bash scripts/generate-clients.sh [python] [hey-api] [openapi-fetch] [orval]   (none: all)
#
#   python         openapi-python-client (pinned in pyproject.toml's dev extra; `make install`)
#                  -> build/clients/python: the installable project `storekeeper-client`,
#                  import package `storekeeper_client` (names in sdk/python/config.yaml)
#   hey-api        @hey-api/openapi-ts (pinned in package.json; `npm ci`; `typescript` is an
#                  alias) -> build/clients/hey-api: SDK functions named by operationId, the
#                  types, and its own fetch client
#   openapi-fetch  openapi-typescript -> build/clients/openapi-fetch/schema.ts: the `paths`
#                  types that the openapi-fetch runtime (package.json) is typed with
#   orval          orval (sdk/orval/orval.config.ts) -> build/clients/orval/storekeeper.ts:
#                  functions named by operationId and the types, on the axios runtime
#
# Any generator warning fails the run: a warning means part of the contract did not make it
# into the client. A generator may say only its usual progress lines; anything else it prints
# counts as a warning. Environment: SPEC (default openapi/openapi.yaml), CLIENTS_DIR (default
# build/clients), VENV (default .venv; else openapi-python-client is looked up on PATH).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SPEC="${SPEC:-openapi/openapi.yaml}"
CLIENTS_DIR="${CLIENTS_DIR:-build/clients}"
VENV="${VENV:-.venv}"
NODE_BIN=node_modules/.bin
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

fail() {
    echo "generate-clients: $*" >&2
    exit 1
}

# run NAME ALLOWED_REGEX COMMAND...: run a generator; fail if it fails or if its output (colours
# stripped, blank lines dropped) has any line that ALLOWED_REGEX (grep -E) does not match.
run() {
    local name="$1" allowed="$2" log="$WORK/${1//\//_}.log"
    shift 2
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        fail "$name failed (above)"
    fi
    local unexpected
    unexpected="$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -v '^[[:space:]]*$' | grep -Ev "$allowed" || true)"
    if [[ -n "$unexpected" ]]; then
        cat "$log" >&2
        printf '%s\n' "--- not a progress line of $name:" "$unexpected" >&2
        fail "$name printed warnings (above)"
    fi
}

node_tool() {
    [[ -x "$NODE_BIN/$1" ]] || fail "$NODE_BIN/$1 is missing (npm ci)"
}

generate_python() {
    # The generator runs `ruff` as a post hook, so its bin directory goes first on PATH.
    # (absolute: the hooks run inside the output directory).
    if [[ -x "$VENV/bin/openapi-python-client" ]]; then
        PATH="$(cd "$VENV/bin" && pwd):$PATH"
    fi
    command -v openapi-python-client >/dev/null ||
        fail "openapi-python-client is not installed (make install, or pip install -e '.[dev]')"
    command -v ruff >/dev/null || fail "ruff is not installed (make install)"
    local out="$CLIENTS_DIR/python"
    rm -rf "$out"
    mkdir -p "$CLIENTS_DIR"
    echo "+ openapi-python-client $(openapi-python-client --version | awk '{print $NF}') -> $out"
    # --fail-on-warning makes it exit non-zero on most warnings; run() catches the rest
    # (it exits 0 on some, e.g. a failing post hook).
    run openapi-python-client '^Generating ' \
        openapi-python-client generate --path "$SPEC" --output-path "$out" --meta pdm \
        --config sdk/python/config.yaml --fail-on-warning
    # Undefined names and syntax errors in generated code would only show on import.
    ruff check --isolated --no-cache --quiet --select F,E9 "$out" ||
        fail "the generated Python client has errors (above)"
}

generate_hey_api() {
    node_tool openapi-ts
    local out="$CLIENTS_DIR/hey-api"
    rm -rf "$out"
    echo "+ @hey-api/openapi-ts $("$NODE_BIN/openapi-ts" --version) -> $out"
    # -i/-o only: its default plugins (@hey-api/typescript, @hey-api/sdk, @hey-api/client-fetch).
    run @hey-api/openapi-ts \
        '^@hey-api/openapi-ts v[0-9.]+$|^\[Job 1\] (⏳ Generating from 1 input:|  \[1\] .+|✅ Done! Your output is in .+)$' \
        "$NODE_BIN/openapi-ts" --input "$SPEC" --output "$out" --no-log-file
}

generate_openapi_fetch() {
    node_tool openapi-typescript
    local out="$CLIENTS_DIR/openapi-fetch" tool
    tool="$(pwd)/$NODE_BIN/openapi-typescript"
    rm -rf "$out"
    mkdir -p "$out"
    echo "+ openapi-typescript $("$tool" --version | tr -d v) -> $out"
    # Run inside the output directory: openapi-typescript lints with the redocly.yaml of its
    # working directory, and ours (`make lint-spec`) relies on .redocly.lint-ignore.yaml, which
    # it does not read (its issue #2189); elsewhere it applies its own default rules.
    (cd "$out" && run openapi-typescript '^✨ openapi-typescript [0-9.]+$|^🚀 .+ → .+ \[[0-9.]+m?s\]$' \
        "$tool" "$SPEC" --output schema.ts)
}

generate_orval() {
    node_tool orval
    local out="$CLIENTS_DIR/orval"
    rm -rf "$out"
    echo "+ orval $("$NODE_BIN/orval" --version) -> $out"
    # orval logs an invalid spec as a warning and goes on: run() makes that a failure.
    SPEC="$SPEC" ORVAL_CLIENT_DIR="$(mkdir -p "$out" && cd "$out" && pwd)" run orval \
        '^🍻 orval v[0-9.]+ - A swagger client generator for typescript$|^🎉 storekeeper - Your OpenAPI spec has been converted into ready to use orval!$' \
        "$NODE_BIN/orval" --config sdk/orval/orval.config.ts
}

targets=("$@")
((${#targets[@]})) || targets=(python hey-api openapi-fetch orval)
[[ -f "$SPEC" ]] || fail "no spec at $SPEC"
# Absolute: openapi-ts would read `openapi/openapi.yaml` as a Hey API registry name, and
# orval resolves a relative one against its config file's folder.
SPEC="$(cd "$(dirname "$SPEC")" && pwd)/$(basename "$SPEC")"
for target in "${targets[@]}"; do
    case "$target" in
        python) generate_python ;;
        hey-api | typescript) generate_hey_api ;;
        openapi-fetch) generate_openapi_fetch ;;
        orval) generate_orval ;;
        *) fail "unknown target '$target' (python, hey-api, openapi-fetch, orval)" ;;
    esac
done
