"""Read models modulo the opaque customer ids: each customer is named by an identifier.

Customer ids are random (``cus_<32 hex>``), so two platforms fed the same touchpoints give
their customers different ids. To compare what they project, each document is rewritten
with every customer id replaced by an identifier of that customer (its source id,
``customer.id``, or another identifier when it has none), as ``kind:value``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from infra.bootstrap import Platform

CUSTOMER_ID = re.compile(r"cus_[0-9a-f]{32}")  # as domain.identity.new_customer_id makes them

Identifier = tuple[str, str]  # (kind, normalised value)


def customer_by(platform: Platform, kind: str, value: str) -> str:
    """The customer id that answers for this identifier, as the identity index has it."""
    found = platform.records.identity.find([(kind, value)])
    assert len(found) == 1, f"no customer holds {kind} {value!r}"
    return found[0][2]


def names(platform: Platform, identifiers: Iterable[Identifier]) -> dict[str, str]:
    """Each identifier's customer id -> ``kind:value``; one identifier per customer."""
    wanted = set(identifiers)
    named = {customer_by(platform, k, v): f"{k}:{v}" for k, v in wanted}
    assert len(named) == len(wanted), "two of the identifiers name one customer"
    return named


def renamed(value: Any, names: Mapping[str, str]) -> Any:
    """``value`` with every string (keys included) that ``names`` holds replaced, but for
    what an ``identifiers`` field holds: identifier values, never customer ids (an old
    customer's id can equal its source id, as FX-ANN does)."""
    if isinstance(value, str):
        return names.get(value, value)
    if isinstance(value, dict):
        return {
            renamed(k, names): v if k == "identifiers" else renamed(v, names)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [renamed(v, names) for v in value]
    if isinstance(value, tuple):
        return tuple(renamed(v, names) for v in value)
    return value


def by_identifier(platform: Platform, value: Any, identifiers: Iterable[Identifier]) -> Any:
    """``value`` (documents, a snapshot) with each customer id replaced by the identifier
    naming it; asserts no opaque id is left, so a comparison never hinges on one."""
    out = renamed(value, names(platform, identifiers))
    left = CUSTOMER_ID.findall(json.dumps(out, default=str))
    assert not left, f"customer ids none of the identifiers names: {left}"
    return out


def by_source_id(platform: Platform, value: Any, source_ids: Iterable[str]) -> Any:
    """``by_identifier`` with each customer named by its source id."""
    return by_identifier(platform, value, [("id", s) for s in source_ids])
