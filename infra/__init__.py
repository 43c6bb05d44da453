"""Wiring: settings, PostgreSQL, the event store, the composition root and the CLI."""
