#!/usr/bin/env bash
# Generate the client SDKs from the contract into build/clients/ (generated, never committed).
#
#   bash scripts/generate-clients.sh [python] [typescript]     (no argument: both)
#
#   python      openapi-python-client (pinned in pyproject.toml's dev extra; `make install`)
#               -> build/clients/python: the installable project `storekeeper-client`,
#               import package `storekeeper_client` (options in sdk/python/config.yaml)
#   typescript  @hey-api/openapi-ts (pinned in package.json; `npm ci`)
#               -> build/clients/typescript: SDK functions named by operationId, the types,
#               and its fetch client (options in sdk/typescript/openapi-ts.config.mjs)
#
# Any generator warning fails the run: a warning means part of the contract did not make it
# into the client. Environment: SPEC (default openapi/openapi.yaml), CLIENTS_DIR (default
# build/clients), VENV (default .venv; else the generator is looked up on PATH).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SPEC="${SPEC:-openapi/openapi.yaml}"
CLIENTS_DIR="${CLIENTS_DIR:-build/clients}"
VENV="${VENV:-.venv}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

fail() {
    echo "generate-clients: $*" >&2
    exit 1
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
    local generator_python
    generator_python="$(dirname "$(command -v openapi-python-client)")/python"

    # Fixes for generator bugs our contract runs into (see that file).
    "$generator_python" sdk/python/patch_templates.py "$WORK/templates" ||
        fail "could not patch the openapi-python-client templates (above)"

    local out="$CLIENTS_DIR/python" log="$WORK/python.log"
    rm -rf "$out"
    mkdir -p "$CLIENTS_DIR"
    echo "+ openapi-python-client $(openapi-python-client --version | awk '{print $NF}') -> $out"
    if ! openapi-python-client generate --path "$SPEC" --output-path "$out" --meta pdm \
        --config sdk/python/config.yaml --custom-template-path "$WORK/templates" \
        --fail-on-warning >"$log" 2>&1; then
        cat "$log" >&2
        fail "openapi-python-client failed or warned (above)"
    fi
    # It exits 0 on some warnings (e.g. a failing post hook): none may appear at all.
    if grep -qi 'warning' "$log"; then
        cat "$log" >&2
        fail "openapi-python-client printed warnings (above)"
    fi
    # Undefined names and syntax errors in generated code would only show on import.
    ruff check --isolated --no-cache --quiet --select F,E9 "$out" ||
        fail "the generated Python client has errors (above)"
}

generate_typescript() {
    local generator=node_modules/.bin/openapi-ts
    [[ -x "$generator" ]] || fail "$generator is missing (npm ci)"
    local out="$CLIENTS_DIR/typescript" log="$WORK/typescript.log"
    rm -rf "$out"
    echo "+ @hey-api/openapi-ts $("$generator" --version) -> $out"
    if ! SPEC="$SPEC" TS_CLIENT_DIR="$out" "$generator" --file sdk/typescript/openapi-ts.config.mjs \
        --no-log-file >"$log" 2>&1; then
        cat "$log" >&2
        fail "@hey-api/openapi-ts failed (above)"
    fi
    if grep -qiE 'warn|error' "$log"; then
        cat "$log" >&2
        fail "@hey-api/openapi-ts printed warnings (above)"
    fi
}

targets=("$@")
((${#targets[@]})) || targets=(python typescript)
[[ -f "$SPEC" ]] || fail "no spec at $SPEC"
# Absolute: openapi-ts would read `openapi/openapi.yaml` as a Hey API registry name.
SPEC="$(cd "$(dirname "$SPEC")" && pwd)/$(basename "$SPEC")"
for target in "${targets[@]}"; do
    case "$target" in
        python) generate_python ;;
        typescript) generate_typescript ;;
        *) fail "unknown target '$target' (python, typescript)" ;;
    esac
done
