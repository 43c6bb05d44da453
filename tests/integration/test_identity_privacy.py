"""The identity index holds no identifier in clear (DESIGN.md guarantee 6): every table
holds keyed digests (HMAC under the identity secret) and kinds, looked up by digesting
the value asked for; an index of clear values is rebuilt at start; ``forget`` erases a
customer's identifiers and keeps the structure merges resolve by."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import psycopg2

from domain.customer import customer_aggregate_id
from infra.bootstrap import Platform, bootstrap
from infra.settings import Settings
from streams.identity import FORGOTTEN, TABLES
from tests.builders import envelope
from tests.integration.test_identity import (
    at,
    every_decision,
    holder,
    index_snapshot,
    new_phone,
    new_tag,
    owner,
    submit,
)


def identity_tables(platform: Platform) -> list[str]:
    """Every table of the identity index, as the database lists them."""
    with contextlib.closing(psycopg2.connect(platform.database_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_name LIKE 'identity%%'"
        )
        return sorted(name for (name,) in cur.fetchall())


def clear_values_in_index(platform: Platform, values: set[str]) -> list[tuple[str, str, str]]:
    """(table, value, row) for every row of an identity table whose text (all columns,
    cast to text) holds one of ``values`` (case-insensitively)."""
    found = []
    with contextlib.closing(psycopg2.connect(platform.database_url)) as conn, conn.cursor() as cur:
        for table in identity_tables(platform):
            cur.execute(f"SELECT t::text FROM {table} t")
            for (row,) in cur.fetchall():
                found += [(table, v, row) for v in values if v.casefold() in row.casefold()]
    return found


def recorded_identifiers(platform: Platform) -> set[str]:
    """Every identifier value any stored touchpoint carries, as recorded (normalised)."""
    with contextlib.closing(psycopg2.connect(platform.database_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT originator_id FROM identity_customer")
        streams = [stream for (stream,) in cur.fetchall()]
    touchpoints = platform.records.stored_touchpoints(streams)
    return {value for tp in touchpoints for value in tp.identifiers.values()}


def people(platform: Platform) -> dict[str, Any]:
    """Touchpoints naming customers by e-mail (mixed case), phone (formatted), loyalty
    card and source id, merged in pairs; a fourth phone refused by the limit."""
    tag = new_tag()
    email, phone, card, source = f"Ann.{tag}@Shop.DE", new_phone(), f"LC-{tag}", f"CRM-{tag}"
    first = owner(platform, envelope({"id": source, "email": email}, at(0)))
    owner(platform, envelope({"phone": phone[:6] + " " + phone[6:]}, at(1)))
    owner(platform, envelope({"loyalty_card": card, "device_id": f"dev-{tag}"}, at(2)))
    submit(platform, [envelope({"email": email, "phone": phone, "loyalty_card": card}, at(3))])
    for minute in range(4, 7):
        submit(platform, [envelope({"email": email, "phone": new_phone()}, at(minute))])
    return {"survivor": first, "email": email.lower(), "phone": phone, "card": card, "id": source}


def test_no_identity_table_holds_an_identifier_in_clear(platform: Platform) -> None:
    every_decision(platform)
    person = people(platform)
    values = recorded_identifiers(platform)
    assert {person["email"], person["phone"], person["card"], person["id"]} <= values
    assert len(values) > 20
    assert set(TABLES) < set(identity_tables(platform))
    kinds = {row["kind"] for row in index_snapshot(platform)["identity_identifier"]}
    assert {"id", "email", "phone", "loyalty_card", "device_id"} <= kinds
    assert clear_values_in_index(platform, values) == []

    rebuilt_from = index_snapshot(platform)
    assert platform.records.index_identities(rebuild=True) > 0
    assert index_snapshot(platform) == rebuilt_from  # the same digests, the same rows
    assert clear_values_in_index(platform, values) == []


def test_look_ups_digest_the_value_asked_for(platform: Platform) -> None:
    person = people(platform)
    identity = platform.records.identity
    survivor = person["survivor"]
    assert identity.find([("email", person["email"]), ("loyalty_card", person["card"])]) == [
        ("email", person["email"], survivor),
        ("loyalty_card", person["card"], survivor),
    ]
    assert identity.find([("email", f"nobody.{new_tag()}@shop.de")]) == []
    located = identity.locate(person["id"])
    assert located is not None and (located.survivor, located.by_source_id) == (survivor, True)
    # Shown in clear all the same: read from the events that linked them.
    shown = {(i["kind"], i["value"]) for i in identity.identifiers_of(survivor)}
    assert {("email", person["email"]), ("phone", person["phone"])} <= shown
    assert ("id", person["id"]) in shown
    (merge, _) = identity.merge_history(survivor)
    assert merge["identifiers"]["email"] == person["email"]


def test_two_secrets_give_two_indexes_with_nothing_in_common(
    make_platform: Callable[..., Platform],
) -> None:
    one = make_platform(identity_secret="a" * 40)
    other = make_platform(identity_secret="b" * 40)
    email = f"ann.{new_tag()}@shop.de"
    digests = []
    for platform in (one, other):
        owner(platform, envelope({"email": email}, at(0)))
        (row,) = index_snapshot(platform)["identity_identifier"]
        digests.append(bytes(row["digest"]))
        assert platform.records.identity.find([("email", email)]) != []
    assert digests[0] != digests[1]


def test_an_index_of_clear_values_is_rebuilt_with_digests_at_start(
    make_platform: Callable[..., Platform],
) -> None:
    """A store whose identity index is from before digests (values in clear, no format
    marker): bootstrap drops its tables and rebuilds them from the event store."""
    platform = make_platform()
    every_decision(platform)
    person = people(platform)
    values = recorded_identifiers(platform)
    written_live = index_snapshot(platform)
    platform.close()
    with contextlib.closing(psycopg2.connect(platform.database_url)) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE identity_format")
        cur.execute("ALTER TABLE identity_identifier RENAME COLUMN digest TO value")
        cur.execute(
            "ALTER TABLE identity_identifier ALTER COLUMN value TYPE text"
            " USING encode(value, 'hex')"
        )
        cur.execute(
            "INSERT INTO identity_identifier SELECT 'email', %s, customer_id, linked_at,"
            " linked_by, version FROM identity_identifier LIMIT 1",
            (person["email"],),
        )
        cur.execute("ALTER TABLE identity_conflict ADD COLUMN identifiers jsonb")
        cur.execute(
            "UPDATE identity_conflict SET identifiers = %s", (f'{{"id": "{person["id"]}"}}',)
        )
        conn.commit()
    assert clear_values_in_index(platform, values) != []

    again = bootstrap(Settings(database_url=platform.database_url), start=False)
    try:
        assert index_snapshot(again) == written_live
        assert clear_values_in_index(again, values) == []
        assert holder(again, "email", person["email"]) == person["survivor"]
    finally:
        again.close()


def test_forget_erases_a_customers_identifiers_and_keeps_its_merges_resolving(
    platform: Platform,
) -> None:
    """The erasure destroys the customer's keys and calls ``forget`` in one transaction:
    nothing finds the customer by an identifier, every id of it still resolves, its
    merges and refusals name no identifier; and a rebuild from the event store then
    makes the very same index."""
    person = people(platform)
    survivor = person["survivor"]
    tag = new_tag()
    bob = f"bob.{tag}@shop.de"
    bystander = owner(platform, envelope({"email": bob}, at(0)))
    submit(platform, [envelope({"id": f"OTHER-{tag}", "email": bob}, at(1))])
    # Refused (two source ids): recorded on the bystander, naming the erased customer.
    submit(platform, [envelope({"id": f"OTHER-{tag}", "email": person["email"]}, at(2))])
    identity = platform.records.identity
    streams = identity.members(survivor)
    assert len(streams) == 3

    with platform.records._columnar().datastore.transaction(commit=True) as cursor:
        platform.records.keyring.destroy(cursor, [customer_aggregate_id(s) for s in streams])
        identity.forget(cursor, streams)

    assert identity.identifiers_of(survivor) == []
    asked = [("email", person["email"]), ("phone", person["phone"]), ("id", person["id"])]
    assert identity.find(asked) == []
    assert identity.locate(person["id"]) is None
    for stream in streams:  # every id still resolves to the survivor
        located = identity.locate(stream)
        assert located is not None and located.survivor == survivor
    assert [m["identifiers"] for m in identity.merge_history(survivor)] == [{}, {}]
    items = identity.conflicts(limit=50, offset=0)[1]
    on_erased = [i for i in items if i["recorded_on"] in streams]
    assert [i["rule"] for i in on_erased] == ["limit"]  # the fourth phone
    assert all((i["identifiers"], i["reason"]) == ({}, FORGOTTEN) for i in on_erased)
    (on_bystander,) = [i for i in items if i["recorded_on"] == bystander]
    assert on_bystander["identifiers"] == {"id": f"OTHER-{tag}", "email": person["email"]}
    assert holder(platform, "email", bob) == bystander  # nobody else is forgotten
    with contextlib.closing(psycopg2.connect(platform.database_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM identity_identifier WHERE customer_id = ANY(%s)", (streams,)
        )
        assert cur.fetchone() == (0,)
        cur.execute(
            "SELECT count(*) FROM identity_customer WHERE customer_id = ANY(%s)", (streams,)
        )
        assert cur.fetchone() == (3,)

    forgotten = index_snapshot(platform)
    platform.records.index_identities(rebuild=True)
    assert index_snapshot(platform) == forgotten
