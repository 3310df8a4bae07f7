"""marshmallow-sqlalchemy schemas: load request bodies into models, dump models to JSON.

The OpenAPI spec has already validated shapes and types by the time a schema runs; the
schemas decide which model attributes a payload may set (never ids) and how rows are
rendered. Create a fresh schema instance per use: schema objects are not thread-safe.
"""
