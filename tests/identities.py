"""Read models modulo the opaque customer ids: each customer is named by its source id.

Customer ids are random (``cus_<32 hex>``), so two platforms fed the same touchpoints give
their customers different ids. To compare what they project, each document is rewritten
with every customer id replaced by the source id (``customer.id``) it answers for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from infra.bootstrap import Platform
from tests.conftest import customer_of

CUSTOMER_ID = re.compile(r"cus_[0-9a-f]{32}")  # as domain.identity.new_customer_id makes them


def source_names(platform: Platform, source_ids: Iterable[str]) -> dict[str, str]:
    """Each of these source ids' customer id -> ``source:<source id>``."""
    names = {customer_of(platform, s): f"source:{s}" for s in set(source_ids)}
    assert len(names) == len(set(source_ids)), "two source ids answered by one customer"
    return names


def renamed(value: Any, names: Mapping[str, str]) -> Any:
    """``value`` with every string (keys included) that ``names`` holds replaced."""
    if isinstance(value, str):
        return names.get(value, value)
    if isinstance(value, dict):
        return {renamed(k, names): renamed(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [renamed(v, names) for v in value]
    return value


def by_source_id(platform: Platform, value: Any, source_ids: Iterable[str]) -> Any:
    """``value`` (documents, a snapshot) with each customer id replaced by its source id;
    asserts none is left, so the comparison does not hinge on a random id."""
    out = renamed(value, source_names(platform, source_ids))
    left = CUSTOMER_ID.findall(json.dumps(out))
    assert not left, f"customer ids no source id answers for: {left}"
    return out
