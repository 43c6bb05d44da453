"""The HTTP API: ingest, projections, timeline, health."""
