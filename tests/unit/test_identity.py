"""Identity resolution rules (domain/identity.py): pure, no store."""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.identity import (
    KEPT_APART,
    LIMIT,
    SOURCE_IDS_DIFFER,
    Arrival,
    Group,
    IdentityRules,
    Known,
    Resolution,
    blocked_setting,
    identifier_digest,
    new_customer_id,
    resolve,
    source_key,
)
from tests.builders import T0


def counter() -> object:
    numbers = itertools.count(1)
    return lambda: f"cus_{next(numbers):03d}"


def arrival(minute: int = 0, **identifiers: str) -> Arrival:
    return Arrival(identifiers, T0 + timedelta(minutes=minute))


def known(
    owners: Mapping[tuple[str, str], str] | None = None,
    *,
    parents: Mapping[str, str] | None = None,
    apart: Sequence[tuple[str, str]] = (),
) -> Known:
    """An index holding ``owners`` (identifier -> stream); ``parents`` merges streams."""
    facts = Known(owners=dict(owners or {}))
    streams = set(facts.owners.values()) | set(parents or {}) | set((parents or {}).values())
    for stream in streams:
        root = stream
        while parents and root in parents:
            root = parents[root]
        facts.survivors[stream] = root
    for (kind, value), stream in facts.owners.items():
        facts.groups.setdefault(facts.survivors[stream], Group()).add(kind, value)
    facts.kept_apart = {frozenset(pair) for pair in apart}
    return facts


def never_merges(_: Sequence[str]) -> dict[str, datetime]:
    raise AssertionError("first-seen times are asked for only when groups merge")


def seen(**times: int) -> object:
    return lambda groups: {g: T0 + timedelta(minutes=times[g]) for g in groups if g in times}


def run(
    arrivals: Sequence[Arrival],
    facts: Known | None = None,
    first_seen: object = never_merges,
    rules: IdentityRules | None = None,
) -> Resolution:
    return resolve(
        arrivals,
        facts or Known(),
        rules or IdentityRules(),
        first_seen,  # type: ignore[arg-type]  # the test doubles above
        new_id=counter(),  # type: ignore[arg-type]
    )


# -- blocked values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("id", ""),
        ("id", "   "),
        ("id", "NULL"),
        ("device_id", "none"),
        ("loyalty_card", "undefined"),
        ("id", "Anonymous"),
        ("crm_id", "guest"),
        ("id", "0"),
        ("id", "-1"),
        ("loyalty_card", "000000"),
        ("phone", "+0000000"),
        ("email", "test@example.com"),
        ("email", "Test@Shop.de"),
        ("email", "none@gmail.com"),
        ("email", "noreply@shop.de"),
    ],
)
def test_placeholders_are_blocked(kind: str, value: str) -> None:
    assert IdentityRules().is_blocked(kind, value)


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("id", "C-100"),
        ("email", "ann@shop.de"),
        ("email", "ann.lee.7@example.org"),
        ("phone", "+4930123456"),
        ("id", "10"),
    ],
)
def test_real_values_are_not_blocked(kind: str, value: str) -> None:
    assert not IdentityRules().is_blocked(kind, value)


def test_a_setting_blocks_a_value_of_one_kind_or_of_every_kind() -> None:
    rules = IdentityRules(blocked=blocked_setting(["device_id:KIOSK-7", " Shared-Tablet "]))

    assert rules.is_blocked("device_id", "kiosk-7")
    assert not rules.is_blocked("loyalty_card", "KIOSK-7")
    assert rules.is_blocked("loyalty_card", "shared-tablet")


def test_usable_identifiers_drop_blocked_ones_and_come_strongest_first() -> None:
    rules = IdentityRules()

    assert rules.usable({"device_id": "D1", "email": "guest", "id": "C1"}) == [
        ("id", "C1"),
        ("device_id", "D1"),
    ]


def test_the_source_key_is_the_strongest_identifiers_keyed_digest() -> None:
    secret = b"s" * 32
    key = source_key({"device_id": "D1", "phone": "+4930123456"}, secret)
    assert key == identifier_digest(secret, "phone", "+4930123456").hex()
    assert key == source_key({"phone": "+4930123456"}, secret)  # the same: one partition
    assert "+4930123456" not in key


def test_an_identifier_digest_is_keyed_by_the_secret_and_is_no_plain_hash() -> None:
    one, other = b"1" * 32, b"2" * 32
    digest = identifier_digest(one, "email", "ann@shop.de")
    assert digest == identifier_digest(one, "email", "ann@shop.de")  # deterministic
    assert digest != identifier_digest(other, "email", "ann@shop.de")
    assert digest != identifier_digest(one, "phone", "ann@shop.de")  # the kind counts
    assert digest != identifier_digest(one, "email", "bob@shop.de")
    for plain in (b"ann@shop.de", b"email:ann@shop.de"):
        assert digest not in (hashlib.sha256(plain).digest(), hashlib.sha1(plain).digest())
    assert digest == hmac.new(one, b"email:ann@shop.de", hashlib.sha256).digest()
    with pytest.raises(ValueError, match="secret"):
        identifier_digest(b"", "email", "ann@shop.de")


def test_new_customer_ids_are_random_and_opaque() -> None:
    made = {new_customer_id() for _ in range(1000)}

    assert len(made) == 1000
    assert all(m.startswith("cus_") and len(m) == 36 for m in made)


# -- placing touchpoints --------------------------------------------------------------


def test_unknown_identifiers_start_a_new_customer_and_link_to_it() -> None:
    out = run([arrival(email="ann@shop.de", phone="+4930123456")])

    (placement,) = out.placements
    assert placement.registers and placement.stream == placement.survivor == "cus_001"
    assert out.links[0].identifiers == {"email": "ann@shop.de", "phone": "+4930123456"}


def test_a_known_identifier_lands_on_its_customer_and_links_the_new_ones() -> None:
    out = run(
        [arrival(email="ann@shop.de", phone="+4930123456")], known({("email", "ann@shop.de"): "A"})
    )

    assert out.placements[0].stream == "A" and not out.placements[0].registers
    assert [(link.stream, link.identifiers) for link in out.links] == [
        ("A", {"phone": "+4930123456"})
    ]
    assert not out.merges


def test_touchpoints_of_one_batch_see_what_the_ones_before_linked() -> None:
    out = run([arrival(email="ann@shop.de"), arrival(1, email="ann@shop.de", phone="+4930123456")])

    assert [p.stream for p in out.placements] == ["cus_001", "cus_001"]
    assert out.placements[1].registers is False


def test_only_blocked_identifiers_start_a_customer_of_their_own_each_time() -> None:
    out = run([arrival(email="test@example.com"), arrival(1, email="test@example.com")])

    assert [p.stream for p in out.placements] == ["cus_001", "cus_002"]
    assert not out.links


def test_a_touchpoint_on_an_absorbed_stream_stays_on_it_and_answers_for_the_survivor() -> None:
    facts = known({("email", "a@shop.de"): "A", ("phone", "+4930123456"): "B"}, parents={"B": "A"})

    out = run([arrival(phone="+4930123456")], facts)

    assert (out.placements[0].stream, out.placements[0].survivor) == ("B", "A")


def test_identifiers_of_two_streams_of_one_group_land_on_the_survivor() -> None:
    facts = known({("email", "a@shop.de"): "A", ("phone", "+4930123456"): "B"}, parents={"B": "A"})

    out = run([arrival(email="a@shop.de", phone="+4930123456")], facts)

    assert out.placements[0].stream == "A" and not out.merges


# -- merges ---------------------------------------------------------------------------


def test_two_customers_merge_into_the_one_first_seen_earliest() -> None:
    facts = known({("email", "a@shop.de"): "A", ("phone", "+4930123456"): "B"})

    out = run([arrival(9, email="a@shop.de", phone="+4930123456")], facts, seen(A=5, B=1))

    (merge,) = out.merges
    assert (merge.survivor, merge.absorbed) == ("B", "A")
    assert out.placements[0].stream == "B"


def test_a_tie_in_first_seen_goes_to_the_smaller_customer_id() -> None:
    facts = known({("email", "a@shop.de"): "Z", ("phone", "+4930123456"): "M"})

    out = run([arrival(email="a@shop.de", phone="+4930123456")], facts, seen(Z=1, M=1))

    assert out.merges[0].survivor == "M"


def test_a_chain_of_merges_in_one_batch_ends_with_one_survivor() -> None:
    facts = known({("email", "a@shop.de"): "A", ("phone", "+4930123456"): "B", ("id", "C-3"): "C"})

    out = run(
        [
            arrival(10, email="a@shop.de", phone="+4930123456"),
            arrival(11, phone="+4930123456", id="C-3"),
            arrival(12, email="a@shop.de"),
        ],
        facts,
        seen(A=1, B=2, C=3),
    )

    assert [(m.survivor, m.absorbed) for m in out.merges] == [("A", "B"), ("A", "C")]
    assert [p.survivor for p in out.placements] == ["A", "A", "A"]


def test_the_batch_counts_in_first_seen() -> None:
    # B's earliest touchpoint arrives in this very batch, before the merging one.
    facts = known({("email", "a@shop.de"): "A", ("phone", "+4930123456"): "B"})

    out = run(
        [arrival(0, phone="+4930123456"), arrival(9, email="a@shop.de", phone="+4930123456")],
        facts,
        seen(A=5, B=8),
    )

    assert out.merges[0].survivor == "B"


# -- guard rails ----------------------------------------------------------------------


def test_two_source_ids_are_never_merged_automatically() -> None:
    facts = known({("id", "C-1"): "A", ("id", "C-2"): "B", ("email", "a@shop.de"): "B"})

    out = run([arrival(id="C-1", email="a@shop.de")], facts)

    assert not out.merges
    (refusal,) = out.refusals
    assert refusal.rule == SOURCE_IDS_DIFFER and set(refusal.customers) == {"A", "B"}
    assert out.placements[0].stream == "A"  # the customer its strongest identifier names


def test_a_pair_split_apart_is_not_merged_again() -> None:
    facts = known({("email", "a@shop.de"): "A", ("phone", "+4930123456"): "B"}, apart=[("A", "B")])

    out = run([arrival(email="a@shop.de", phone="+4930123456")], facts)

    assert not out.merges and out.refusals[0].rule == KEPT_APART


def test_a_merge_over_a_kind_limit_is_refused_and_links_nothing() -> None:
    owners = {("email", f"{n}@shop.de"): "A" for n in range(3)}
    facts = known(owners | {("email", "b@shop.de"): "B", ("phone", "+4930123456"): "B"})

    out = run([arrival(email="0@shop.de", phone="+4930123456", device_id="D-1")], facts)

    assert not out.merges and not out.links
    (refusal,) = out.refusals
    assert refusal.rule == LIMIT and refusal.reason.startswith("email:")
    assert "limit of 3" in refusal.reason and set(refusal.customers) == {"A", "B"}
    assert out.placements[0].stream == "A"


def test_a_new_identifier_over_its_kind_limit_is_not_linked() -> None:
    owners = {("device_id", "D-0"): "A", ("device_id", "D-1"): "A", ("email", "a@shop.de"): "A"}
    rules = IdentityRules(limits={"device_id": 2})

    out = run(
        [arrival(email="a@shop.de", device_id="D-9", phone="+4930123456")],
        known(owners),
        rules=rules,
    )

    assert out.placements[0].stream == "A"
    assert [link.identifiers for link in out.links] == [{"phone": "+4930123456"}]
    (refusal,) = out.refusals
    assert (refusal.rule, refusal.identifiers) == (LIMIT, {"device_id": "D-9"})


def test_a_shared_device_merges_customers_up_to_the_limit_and_no_further() -> None:
    owners = {("email", f"p{n}@shop.de"): f"S{n:05d}" for n in range(200)}
    facts = known(owners)
    first = {f"S{n:05d}": T0 + timedelta(minutes=n) for n in range(200)}

    out = resolve(
        [arrival(300 + n, email=f"p{n}@shop.de", device_id="KIOSK") for n in range(200)],
        facts,
        IdentityRules(),
        lambda groups: {g: first[g] for g in groups if g in first},
        new_id=counter(),  # type: ignore[arg-type]
    )

    assert len(out.merges) == 2  # e-mail limit 3: S00000 absorbs S00001 and S00002
    assert {m.survivor for m in out.merges} == {"S00000"}
    assert len(out.refusals) == 197 and {r.rule for r in out.refusals} == {LIMIT}
    assert all(p.stream == f"S{n:05d}" for n, p in enumerate(out.placements) if n >= 3)


@given(st.permutations(range(6)))
def test_whatever_the_order_touchpoints_naming_one_person_end_on_one_customer(
    order: list[int],
) -> None:
    spellings = [
        {"email": "a@shop.de"},
        {"phone": "+4930123456"},
        {"loyalty_card": "LC-1"},
        {"email": "a@shop.de", "phone": "+4930123456"},
        {"phone": "+4930123456", "loyalty_card": "LC-1"},
        {"device_id": "D-1", "loyalty_card": "LC-1"},
    ]
    facts = Known()
    times: dict[str, datetime] = {}

    out = resolve(
        [arrival(n, **spellings[i]) for n, i in enumerate(order)],
        facts,
        IdentityRules(),
        lambda groups: {g: times[g] for g in groups if g in times},
        new_id=counter(),  # type: ignore[arg-type]
    )

    assert len({facts.survivors[p.stream] for p in out.placements}) == 1
    assert not out.refusals
