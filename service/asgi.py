"""ASGI entry point for uvicorn and gunicorn: ``service.asgi:app``."""

import gc

from service.app import create_app

app = create_app()
# Everything built so far (the spec, its validators, the routes, SQLAlchemy's mappers) lives
# as long as the process: moved out of the collector's view, it is not traversed again by
# every full collection, each of which would otherwise pause all requests for tens of ms.
gc.freeze()
