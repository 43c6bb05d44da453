"""Identity on simulated omnichannel traffic, checked against an independent computation:
the customers the touchpoints prove (identifiers connected by touchpoints carrying them
together) are exactly the customers resolved, each holding every touchpoint it had.

Some touchpoints name their customer only by an e-mail, a phone, a loyalty card or a
device (``sourceless_rate``): they start customers of their own until a touchpoint
carrying that identifier with the source id merges them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from domain.touchpoints import TouchpointIn, parse_touchpoint
from infra.bootstrap import Platform
from infra.simulator import Simulator, SimulatorConfig
from tests.conftest import embedded

PERIOD = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))


def record_simulated(
    platform: Platform, config: SimulatorConfig, touchpoints: int
) -> list[TouchpointIn]:
    """Record ``touchpoints`` simulated envelopes in batches of 1000; return them parsed."""
    simulator = Simulator(config)
    sent: list[TouchpointIn] = []
    while len(sent) < touchpoints:
        batch = [
            parse_touchpoint(e) for e in simulator.touchpoints(min(1000, touchpoints - len(sent)))
        ]
        if not batch:
            break
        platform.records.record(batch)
        sent += batch
    assert embedded(platform).wait_until_projected(timeout=600)
    return sent


@dataclass
class Customer:
    """What the simulator sent that proves to be one customer: the touchpoints whose
    identifiers are connected (two touchpoints sharing an identifier are one customer)."""

    identifiers: set[tuple[str, str]] = field(default_factory=set)
    event_ids: set[str] = field(default_factory=set)
    orders: dict[str, Decimal] = field(default_factory=dict)


def expected_customers(sent: list[TouchpointIn]) -> list[Customer]:
    """The customers the touchpoints prove, by union-find over their identifiers: an
    independent computation of what identity resolution must end with."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def root(item: tuple[str, str]) -> tuple[str, str]:
        while parent.setdefault(item, item) != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for touchpoint in sent:
        first, *others = touchpoint.customer.present().items()
        for other in others:
            parent[root(other)] = root(first)
    found: dict[tuple[str, str], Customer] = defaultdict(Customer)
    for touchpoint in sent:
        identifiers = touchpoint.customer.present()
        customer = found[root(next(iter(identifiers.items())))]
        customer.identifiers |= set(identifiers.items())
        customer.event_ids.add(touchpoint.event_id)
        if touchpoint.type == "purchase":
            customer.orders.setdefault(
                touchpoint.payload["order_id"], Decimal(touchpoint.payload["amount"])
            )
    return list(found.values())


def check_population(platform: Platform, expected: list[Customer]) -> int:
    """One survivor per expected customer, every identifier of theirs resolving to it,
    holding their distinct touchpoints and orders; return how many merges it took."""
    identity = platform.records.identity
    survivors: list[str] = []
    for customer in expected:
        found = {survivor for _, _, survivor in identity.find(sorted(customer.identifiers))}
        assert len(found) == 1, (sorted(customer.identifiers), found)
        survivors.append(found.pop())
    assert len(set(survivors)) == len(survivors)  # no two share a customer
    documents = platform.store.dump("customer")
    assert set(documents) == set(survivors)  # none left over, none missing
    for survivor, customer in zip(survivors, expected, strict=True):
        state = documents[survivor]
        assert state["touchpoints_total"] == len(customer.event_ids)
        assert len(state["orders"]) == len(customer.orders)
        spent = sum(map(Decimal, state["spend_by_currency"].values()), Decimal(0))
        assert spent == sum(customer.orders.values(), Decimal(0))
    return sum(len(identity.merge_history(s)) for s in survivors)


def test_every_simulated_person_is_one_customer_with_all_their_touchpoints(
    platform: Platform,
) -> None:
    config = SimulatorConfig(
        seed=7, customers=400, start=PERIOD[0], end=PERIOD[1], sourceless_rate=0.5
    )
    started = time.perf_counter()
    sent = record_simulated(platform, config, 12_000)
    print(f"recorded {len(sent)} touchpoints in {time.perf_counter() - started:.1f} s")

    expected = expected_customers(sent)
    merges = check_population(platform, expected)
    print(f"{len(expected)} customers for {config.customers} people, after {merges} merges")

    assert merges > 0  # sourceless touchpoints started customers that merged
