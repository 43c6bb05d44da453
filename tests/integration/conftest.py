"""A Kafka-protocol broker for the integration tests.

``PEAKEND_KAFKA_BOOTSTRAP`` if set (a real cluster: every test uses its own topic
prefix, so they do not see each other's messages); else a local Tansu broker with
in-memory storage, started once for the session on a free loopback port and stopped
after it (DESIGN.md, "Local services").
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from infra.broker import LocalBroker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bootstrap address ``host:port`` of a running broker."""
    if bootstrap := os.environ.get("PEAKEND_KAFKA_BOOTSTRAP"):
        yield bootstrap
        return
    local = LocalBroker(log_path=tmp_path_factory.mktemp("broker") / "tansu.log")
    local.start()
    try:
        yield local.bootstrap
    finally:
        local.stop()
