"""Storekeeper: an OpenAPI-first inventory service."""
