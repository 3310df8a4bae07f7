# Storekeeper API image: gunicorn + uvicorn workers serving the connexion app.
#
#   docker build -t storekeeper .
#   docker run -p 8080:8080 -e DATABASE_URL=postgresql+psycopg://user:pass@host:5432/db storekeeper
#
# Without DATABASE_URL the service uses SQLite in /app/var (mount a volume there to keep it).
# The container runs scripts/serve-production.sh: `storekeeper db upgrade`, then gunicorn.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 storekeeper \
    && useradd --system --uid 10001 --gid storekeeper --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin storekeeper

# service/config.py finds openapi/, migrations/ and alembic.ini relative to the source tree
# (PROJECT_ROOT = parent of service/), so the source stays in /app and is installed in
# editable mode: the package imports from /app/service, not from site-packages.
WORKDIR /app

# Dependencies first, in their own layer: rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY alembic.ini ./
COPY migrations/ migrations/
COPY openapi/ openapi/
COPY scripts/ scripts/
COPY service/ service/
RUN pip install --no-cache-dir --no-deps -e . \
    && chmod 0755 scripts/*.sh \
    && mkdir -p /app/var \
    && chown storekeeper:storekeeper /app/var

USER storekeeper

ENV HOST=0.0.0.0 \
    PORT=8080 \
    WEB_CONCURRENCY=2
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8080') + '/health', timeout=4); sys.exit(0 if r.status == 200 else 1)"]

# gunicorn becomes PID 1 (the script execs it) and shuts down gracefully on SIGTERM
# (graceful timeout 20 s: give `docker stop` a longer timeout, e.g. --time 30).
STOPSIGNAL SIGTERM
CMD ["/app/scripts/serve-production.sh"]
