#!/usr/bin/env bash
# The one production serve command, used by the Dockerfile and by CI (scripts/contract-live.sh).
#
# Upgrades the database named by DATABASE_URL (default: SQLite in var/) to the latest alembic
# revision, then replaces itself with gunicorn running uvicorn workers on the connexion app.
#
# Environment:
#   HOST (0.0.0.0), PORT (8080), WEB_CONCURRENCY (2 worker processes), DATABASE_URL,
#   plus everything service/config.py reads (STOREKEEPER_VALIDATE_RESPONSES, LOG_LEVEL, ...).
#   VENV: a virtualenv whose bin/ holds storekeeper and gunicorn. If unset, they are taken from
#   PATH, falling back to ./.venv/bin when they are not on PATH (local checkout).
set -euo pipefail

# VENV is resolved against the caller's directory, before moving to the project root.
if [[ -n "${VENV:-}" ]]; then
    venv_dir="$(cd "$VENV" && pwd)"
    export PATH="$venv_dir/bin:$PATH"
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -z "${VENV:-}" ]] && ! command -v gunicorn >/dev/null 2>&1 && [[ -x .venv/bin/gunicorn ]]; then
    export PATH="$PWD/.venv/bin:$PATH"
fi

for tool in storekeeper gunicorn; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "serve-production: '$tool' not found on PATH (install the project, or set VENV)" >&2
        exit 127
    fi
done

storekeeper db upgrade

exec gunicorn service.asgi:app \
    -k uvicorn_worker.UvicornWorker \
    --bind "${HOST:-0.0.0.0}:${PORT:-8080}" \
    --workers "${WEB_CONCURRENCY:-2}" \
    --access-logfile - \
    --graceful-timeout 20 \
    --timeout 60
