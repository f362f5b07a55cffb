"""Alembic migrations of the coordinator's schema, applied at start (store.migrate)."""
