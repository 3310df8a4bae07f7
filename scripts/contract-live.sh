#!/usr/bin/env bash
# Live contract test: start the real production server (scripts/serve-production.sh: alembic
# upgrade + gunicorn/uvicorn workers) on a fresh database, then run schemathesis against the
# spec it serves at /openapi.json. Exits with schemathesis' exit code.
#
# Environment:
#   CONTRACT_DATABASE_URL      database to use; it must be empty (default: a new temp SQLite file)
#   CONTRACT_PORT              port on 127.0.0.1 (default: a free port picked at start)
#   CONTRACT_LABEL             names the report files (default: the database backend)
#   CONTRACT_READY_TIMEOUT     seconds to wait for GET /health/ready == 200 (default 60)
#   SCHEMATHESIS_SEED          default 20261122
#   SCHEMATHESIS_MAX_EXAMPLES  default 50
#   SCHEMATHESIS_WORKERS       default 1 (hypothesis has raced on AST parsing with 2 workers)
#   WEB_CONCURRENCY            gunicorn workers for the server under test (default 2)
#   VENV                       virtualenv holding schemathesis, storekeeper, gunicorn (default .venv)
#
# Configuration for schemathesis lives in ./schemathesis.toml (passed with --config-file when
# present). Reports go to artifacts/: contract-<label>.junit.xml and contract-<label>-server.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${VENV:-}" ]]; then
    VENV="$(cd "$VENV" && pwd)"
else
    VENV="$ROOT/.venv"
fi
cd "$ROOT"

PY="$VENV/bin/python"
SCHEMATHESIS="$VENV/bin/schemathesis"
for tool in "$PY" "$SCHEMATHESIS" "$VENV/bin/storekeeper" "$VENV/bin/gunicorn"; do
    if [[ ! -x "$tool" ]]; then
        echo "contract: $tool is missing; run 'make install' first" >&2
        exit 2
    fi
done

port_is_free() {
    "$PY" - "$1" <<'EOF'
import socket, sys
with socket.socket() as s:
    try:
        s.bind(("127.0.0.1", int(sys.argv[1])))
    except OSError:
        sys.exit(1)
EOF
}

if [[ -n "${CONTRACT_PORT:-}" ]]; then
    PORT="$CONTRACT_PORT"
    if ! port_is_free "$PORT"; then
        echo "contract: port $PORT on 127.0.0.1 is already in use (set CONTRACT_PORT to another)" >&2
        exit 2
    fi
else
    PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
fi
BASE_URL="http://127.0.0.1:$PORT"

READY_TIMEOUT="${CONTRACT_READY_TIMEOUT:-60}"
WORKDIR="$(mktemp -d "${TMPDIR:-/tmp}/storekeeper-contract.XXXXXX")"
SERVER_LOG="$WORKDIR/server.log"
SERVER_PID=""
USE_SETSID=0

if [[ -n "${CONTRACT_DATABASE_URL:-}" ]]; then
    DATABASE_URL="$CONTRACT_DATABASE_URL"
else
    DATABASE_URL="sqlite:///$WORKDIR/contract.db"
fi
BACKEND="${DATABASE_URL%%[:+]*}"
LABEL="${CONTRACT_LABEL:-$BACKEND}"
ARTIFACTS="$ROOT/artifacts"
mkdir -p "$ARTIFACTS"

redacted_url() {
    # Hide a password, if any, when printing the URL.
    sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#' <<<"$1"
}

print_server_log() {
    echo "----- server log (last ${1:-80} lines of $SERVER_LOG) -----" >&2
    tail -n "${1:-80}" "$SERVER_LOG" >&2 || true
    echo "----- end of server log -----" >&2
}

# shellcheck disable=SC2317  # called from the EXIT trap
stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    local pid="$SERVER_PID"
    SERVER_PID=""
    if kill -0 "$pid" 2>/dev/null; then
        # gunicorn master: TERM is a graceful shutdown (graceful-timeout 20 s).
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "contract: server $pid did not stop in 25 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    # The server ran in its own session: its process group id is its pid. Workers left behind
    # by a KILLed master are removed here.
    if [[ "$USE_SETSID" == 1 ]]; then
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
}

# shellcheck disable=SC2317  # the EXIT trap
cleanup() {
    local rc=$?
    stop_server
    if [[ -f "$SERVER_LOG" ]]; then
        cp "$SERVER_LOG" "$ARTIFACTS/contract-$LABEL-server.log" 2>/dev/null || true
    fi
    rm -rf "$WORKDIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "contract: database $(redacted_url "$DATABASE_URL"), server $BASE_URL, log $SERVER_LOG"

# Start the server in its own session (process group) so that stop_server can reach every
# process it spawned. Without setsid it stays in ours; TERM to the master still stops workers.
launcher=()
if command -v setsid >/dev/null 2>&1; then
    USE_SETSID=1
    launcher=(setsid)
fi
env \
    DATABASE_URL="$DATABASE_URL" \
    HOST=127.0.0.1 \
    PORT="$PORT" \
    WEB_CONCURRENCY="${WEB_CONCURRENCY:-2}" \
    STOREKEEPER_VALIDATE_RESPONSES=true \
    WRITE_RATE_LIMIT="${CONTRACT_WRITE_RATE_LIMIT:-100000/minute}" \
    VENV="$VENV" \
    "${launcher[@]}" bash "$ROOT/scripts/serve-production.sh" >"$SERVER_LOG" 2>&1 </dev/null &
SERVER_PID=$!

# Wait for readiness (database reachable), making sure that it is our server that answers.
deadline=$((SECONDS + READY_TIMEOUT))
while :; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "contract: FAILED: the server exited before becoming ready" >&2
        print_server_log 200
        exit 1
    fi
    if "$PY" - "$BASE_URL/health/ready" <<'EOF'; then
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
        break
    fi
    if ((SECONDS >= deadline)); then
        echo "contract: FAILED: GET $BASE_URL/health/ready did not return 200 within ${READY_TIMEOUT} s" >&2
        print_server_log 200
        exit 1
    fi
    sleep 0.5
done
echo "contract: server ready after ${SECONDS} s"

# Fuzz as an admin, the way an operator starts: create the first admin with the CLI, then log
# in over HTTP. (schemathesis' ignored_auth check also replays requests without the token.)
ADMIN_EMAIL="contract-admin@example.com"
ADMIN_PASSWORD="contract-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s\n' "$ADMIN_PASSWORD" |
    DATABASE_URL="$DATABASE_URL" "$VENV/bin/storekeeper" users create \
        --email "$ADMIN_EMAIL" --name "Contract admin" --role admin --password-stdin >/dev/null
TOKEN="$("$PY" - "$BASE_URL/api/v1/auth/token" "$ADMIN_EMAIL" "$ADMIN_PASSWORD" <<'EOF'
import json, sys, urllib.request
url, email, password = sys.argv[1:4]
request = urllib.request.Request(
    url,
    data=json.dumps({"email": email, "password": password}).encode(),
    headers={"Content-Type": "application/json"},
)
with urllib.request.urlopen(request, timeout=10) as response:
    print(json.load(response)["access_token"])
EOF
)"
echo "contract: logged in as $ADMIN_EMAIL"

config_args=()
if [[ -f schemathesis.toml ]]; then
    config_args=(--config-file schemathesis.toml)
fi
JUNIT="$ARTIFACTS/contract-$LABEL.junit.xml"
rm -f "$JUNIT"

st_args=(
    "$BASE_URL/openapi.json"
    --checks "all"
    --phases "examples,coverage,fuzzing,stateful"
    --seed "${SCHEMATHESIS_SEED:-20261122}"
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}"
    --workers "${SCHEMATHESIS_WORKERS:-1}"
    --report junit
    --report-junit-path "$JUNIT"
    --header "Authorization: Bearer $TOKEN"
)
echo "+ schemathesis ${config_args[*]} run ${st_args[*]/Bearer */Bearer ***}"
set +e
"$SCHEMATHESIS" "${config_args[@]}" run "${st_args[@]}"
st_rc=$?
set -e

if ((st_rc != 0)); then
    echo "contract: schemathesis exited with $st_rc" >&2
    print_server_log 100
    echo "contract ($LABEL): FAILED (schemathesis exit code $st_rc); JUnit report: $JUNIT" >&2
else
    echo "contract ($LABEL): passed; JUnit report: $JUNIT"
fi
exit "$st_rc"
