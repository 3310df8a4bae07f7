#!/usr/bin/env bash
# Live contract test: load the demo catalog into a fresh database, start the real production
# server on it (scripts/serve-production.sh: alembic upgrade + gunicorn/uvicorn workers) with
# the deployment defaults (rate limits on: 600 writes a minute per credential, 10 logins a
# minute, ...), then run schemathesis against the spec it serves at /openapi.json, and finally
# scripts/contract_summary.py on the server's access log. Exit code: schemathesis' if it
# failed, else the summary's (1 when a stock document operation never answered 201).
#
# The demo catalog (storekeeper demo: 80 products, locations 1-4, 90 days of stock history)
# gives the fuzzer ids that exist and stock on hand, so the spec's request examples (product
# 42 at location 1, ...) and the stateful links reach real 201s instead of 422s.
#
# Environment:
#   CONTRACT_DATABASE_URL      database to use; it must be empty (default: a new temp SQLite file)
#   CONTRACT_DEMO              1 (default): load the demo catalog first; 0: fuzz an empty catalog
#   CONTRACT_PORT              port on 127.0.0.1 (default: a free port picked at start)
#   CONTRACT_LABEL             names the report files (default: the database backend)
#   CONTRACT_READY_TIMEOUT     seconds to wait for GET /health/ready == 200 (default 60)
#   SCHEMATHESIS_SEED          default 20261122
#   SCHEMATHESIS_MAX_EXAMPLES  when set, --max-examples for every phase, the stateful one
#                              included (default: schemathesis.toml's settings)
#   SCHEMATHESIS_STATEFUL_TIME seconds for the stateful run (default 120), see below
#   SCHEMATHESIS_WORKERS       default 1 (hypothesis has raced on AST parsing with 2 workers)
#   WEB_CONCURRENCY            gunicorn workers for the server under test (default 2)
#   VENV                       virtualenv holding schemathesis, storekeeper, gunicorn (default .venv)
#
# The rate-limit variables of service/config.py (RATE_LIMIT_ENABLED, WRITE_RATE_LIMIT,
# LOGIN_RATE_LIMIT, PASSWORD_RESET_RATE_LIMIT) are removed from the server's environment: every
# run is against the limits a deployment gets by default. (Without REDIS_URL the budgets are
# per worker process, as in a deployment without Redis.) The run sends more writes than that,
# so many answers are 429s: schemathesis.toml accepts them wherever it narrows the statuses.
#
# schemathesis runs twice against the same server: the examples, coverage and fuzzing phases
# (one pass), then the stateful phase alone for SCHEMATHESIS_STATEFUL_TIME seconds. A stateful
# suite ends at the first scenario whose replay draws differently (a live database answers a
# repeated create with a 409, a rate limit with a 429), so a single run with every phase gives
# the stateful phase a few seconds; under a time budget schemathesis repeats its suites until
# the time is spent, and in a run of its own that budget is all the stateful phase's.
#
# Configuration for schemathesis lives in ./schemathesis.toml (passed with --config-file when
# present). Reports go to artifacts/: contract-<label>.junit.xml (examples, coverage, fuzzing),
# contract-<label>-stateful.junit.xml, contract-<label>.log (both runs' whole output, also
# shown here), contract-<label>-server.log (the server's output with its access log) and
# contract-<label>-summary.txt (the summary's table).
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
SERVER_LOG_ARTIFACT="$ARTIFACTS/contract-$LABEL-server.log"

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
        cp "$SERVER_LOG" "$SERVER_LOG_ARTIFACT" 2>/dev/null || true
    fi
    rm -rf "$WORKDIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "contract: database $(redacted_url "$DATABASE_URL"), server $BASE_URL, log $SERVER_LOG"

if [[ "${CONTRACT_DEMO:-1}" != 0 ]]; then
    # Migrates the database, then writes the demo in one transaction (refused, exit 1, if the
    # database has products: it must be empty). Its report without the "Next: ..." advice.
    if ! DATABASE_URL="$DATABASE_URL" "$VENV/bin/storekeeper" demo |
        sed '/^Next:/,$d; s/^/contract: demo: /'; then
        echo "contract: FAILED: could not load the demo catalog (is the database empty?)" >&2
        exit 1
    fi
fi

# Start the server in its own session (process group) so that stop_server can reach every
# process it spawned. Without setsid it stays in ours; TERM to the master still stops workers.
launcher=()
if command -v setsid >/dev/null 2>&1; then
    USE_SETSID=1
    launcher=(setsid)
fi
env \
    -u RATE_LIMIT_ENABLED -u WRITE_RATE_LIMIT -u LOGIN_RATE_LIMIT -u PASSWORD_RESET_RATE_LIMIT \
    DATABASE_URL="$DATABASE_URL" \
    HOST=127.0.0.1 \
    PORT="$PORT" \
    WEB_CONCURRENCY="${WEB_CONCURRENCY:-2}" \
    STOREKEEPER_VALIDATE_RESPONSES=true \
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
# in over HTTP (JSON login, POST /api/v1/auth/login).
# (schemathesis' ignored_auth check also replays requests without the token.)
ADMIN_EMAIL="contract-admin@example.com"
ADMIN_PASSWORD="contract-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s\n' "$ADMIN_PASSWORD" |
    DATABASE_URL="$DATABASE_URL" "$VENV/bin/storekeeper" users create \
        --email "$ADMIN_EMAIL" --name "Contract admin" --role admin --password-stdin >/dev/null
TOKEN="$("$PY" - "$BASE_URL/api/v1/auth/login" "$ADMIN_EMAIL" "$ADMIN_PASSWORD" <<'EOF'
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
JUNIT_STATEFUL="$ARTIFACTS/contract-$LABEL-stateful.junit.xml"
ST_LOG="$ARTIFACTS/contract-$LABEL.log"
SUMMARY="$ARTIFACTS/contract-$LABEL-summary.txt"
SPEC_JSON="$WORKDIR/openapi.json"
rm -f "$JUNIT" "$JUNIT_STATEFUL" "$ST_LOG" "$SUMMARY"

# The spec as served, for the summary's path-to-operation mapping.
"$PY" - "$BASE_URL/openapi.json" "$SPEC_JSON" <<'EOF'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as response, open(sys.argv[2], "wb") as out:
    out.write(response.read())
EOF

# Every check runs: that is schemathesis' default, and schemathesis.toml turns off the one
# check that does not apply to two operations. `--checks all` would turn it back on (the
# command line wins over the configuration file), so it is not passed.
st_args=(
    "$BASE_URL/openapi.json"
    --seed "${SCHEMATHESIS_SEED:-20261122}"
    --workers "${SCHEMATHESIS_WORKERS:-1}"
    --report junit
    --header "Authorization: Bearer $TOKEN"
)
if [[ -n "${SCHEMATHESIS_MAX_EXAMPLES:-}" ]]; then
    st_args+=(--max-examples "$SCHEMATHESIS_MAX_EXAMPLES")
fi

# schemathesis with st_args plus "$@", its output shown and appended to ST_LOG; its exit code.
run_schemathesis() {
    local rc
    echo "+ schemathesis ${config_args[*]} run ${st_args[*]/Bearer */Bearer ***} $*" | tee -a "$ST_LOG"
    set +e
    "$SCHEMATHESIS" "${config_args[@]}" run "${st_args[@]}" "$@" 2>&1 | tee -a "$ST_LOG"
    rc=${PIPESTATUS[0]}
    set -e
    if ((rc != 0)); then
        echo "contract: schemathesis exited with $rc" >&2
        print_server_log 100
    fi
    return "$rc"
}

st_rc=0
run_schemathesis --phases "examples,coverage,fuzzing" --report-junit-path "$JUNIT" || st_rc=$?
stateful_rc=0
run_schemathesis --phases "stateful" --max-time "${SCHEMATHESIS_STATEFUL_TIME:-120}" \
    --report-junit-path "$JUNIT_STATEFUL" || stateful_rc=$?
((st_rc != 0)) || st_rc=$stateful_rc

# The server's access log is complete once it has stopped (graceful shutdown).
stop_server
cp "$SERVER_LOG" "$SERVER_LOG_ARTIFACT"
set +e
"$PY" "$ROOT/scripts/contract_summary.py" "$SERVER_LOG_ARTIFACT" "$SPEC_JSON" \
    --label "$LABEL" --schemathesis-log "$ST_LOG" 2>&1 | tee "$SUMMARY"
summary_rc=${PIPESTATUS[0]}
set -e

# Plain status lines last (schemathesis' own last line is shaped like a test runner's).
if ((st_rc != 0)); then
    echo "contract ($LABEL): FAILED (schemathesis exit code $st_rc); output: $ST_LOG;" \
        "JUnit reports: $JUNIT, $JUNIT_STATEFUL" >&2
    exit "$st_rc"
fi
if ((summary_rc != 0)); then
    echo "contract ($LABEL): FAILED (contract_summary.py exit code $summary_rc); see $SUMMARY" >&2
    exit "$summary_rc"
fi
echo "contract ($LABEL): ok; output: $ST_LOG; JUnit reports: $JUNIT, $JUNIT_STATEFUL;" \
    "summary: $SUMMARY"
