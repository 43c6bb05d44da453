"""The right to be forgotten, right of access, over real HTTP on real PostgreSQL.

The erasure scan: after ``DELETE /v1/customers/{id}``, no personal value of that
customer is in any table (every column of every row, as text), in any answer (the
customer, timeline, journeys, export, search, conflicts, analytics), or in the logs;
the other customers and the anonymous aggregates are unchanged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
from psycopg2 import sql

from domain.customer import Customer, customer_aggregate_id
from infra.bootstrap import Platform
from infra.importer import import_file
from streams.projector import replay
from tests.builders import complaint, envelope, purchase, survey_answer
from tests.conftest import Served, customer_of, embedded


def every_row(database_url: str) -> str:
    """Every row of every table of the database (both schemas Peakend writes), as text."""
    with contextlib.closing(psycopg2.connect(database_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
            " AND table_type = 'BASE TABLE'"
        )
        tables = cur.fetchall()
        dump: list[str] = []
        for schema, table in tables:
            cur.execute(sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(schema, table)))
            dump.extend(row[0] for row in cur.fetchall())
            # bytea columns print as hex: the stored event states are JSON bytes.
            cur.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s"
                " AND table_name = %s AND data_type = 'bytea'",
                (schema, table),
            )
            for (column,) in cur.fetchall():
                cur.execute(
                    sql.SQL("SELECT encode({}, 'escape') FROM {} t").format(
                        sql.Identifier(column), sql.Identifier(schema, table)
                    )
                )
                dump.extend(row[0] or "" for row in cur.fetchall())
    return "\n".join(dump).lower()


def absent(values: Iterable[str], text: str, where: str) -> None:
    found = [v for v in values if v.lower() in text.lower()]
    assert not found, f"{where} still holds {found}"


def person(tag: str) -> dict[str, str]:
    return {
        "id": f"SRC-{tag}",
        "email": f"{tag}.person@example.org",
        "phone": "+4930" + str(uuid.uuid4().int)[:7],
        "loyalty_card": f"LC-{tag}",
    }


@pytest.fixture
def served(platform: Platform, serve: Callable[[Platform], Served]) -> Served:
    return serve(platform)


def record(client: httpx.Client, batch: list[dict[str, Any]]) -> None:
    answer = client.post("/v1/touchpoints", json=batch)
    assert answer.status_code == 202, answer.text


def history(who: dict[str, str], tag: str) -> list[dict[str, Any]]:
    """A customer's touchpoints on two channels, with personal free text."""
    email_only = {"email": who["email"]}
    phone_only = {"phone": who["phone"], "loyalty_card": who["loyalty_card"]}
    return [
        envelope(
            email_only,
            "2026-01-05T10:00:00Z",
            journey={"id": f"J-{tag}", "type": "car_service", "step": "arrival"},
            emotion=1,
            additional={"nickname": f"Nick-{tag}"},
        ),
        purchase(phone_only, "120.00", "2026-01-06T10:00:00Z", order_id=f"O-{tag}"),
        complaint(
            {**email_only, "id": who["id"]},
            "filed",
            "2026-01-07T10:00:00Z",
            complaint_id=f"K-{tag}",
            note=f"Call me at home, {tag} Street 5",
        ),
        # Names both halves: the two customers merge into one.
        survey_answer(
            {"email": who["email"], "phone": who["phone"]}, "nps", 3, "2026-01-08T10:00:00Z"
        ),
    ]


def personal_values(who: dict[str, str], tag: str) -> list[str]:
    return [*who.values(), f"Nick-{tag}", f"{tag} Street 5"]


def everything(client: httpx.Client, customer: str) -> str:
    """Every answer about the customer and about the business, as text."""
    answers = [
        client.get(f"/v1/customers/{customer}"),
        client.get(f"/v1/customers/{customer}/timeline", params={"limit": 500}),
        client.get(f"/v1/customers/{customer}/journeys"),
        client.get(f"/v1/customers/{customer}/export"),
        client.get("/v1/identity/conflicts"),
        client.get("/v1/analytics/pyramid"),
        client.get("/v1/analytics/rfm"),
        client.get("/v1/analytics/satisfaction"),
        client.get("/v1/audit"),
        client.get("/metrics"),
    ]
    for answer in answers:
        assert answer.status_code < 500, answer.text
    return "\n".join(a.text for a in answers)


def test_an_erased_customer_leaves_no_personal_value_anywhere(
    platform: Platform, served: Served, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tag, other_tag = f"erase{uuid.uuid4().hex[:6]}", f"keep{uuid.uuid4().hex[:6]}"
    who, other = person(tag), person(other_tag)
    rejected = tmp_path / "history.jsonl"
    rejected.write_text(
        json.dumps({**envelope({"email": who["email"]}), "emotion": 9})
        + "\n"
        + json.dumps({**envelope({"email": other["email"]}), "emotion": 9})
        + "\n"
    )
    import_file(platform, rejected)
    rejects = tmp_path / "history.jsonl.rejects.jsonl"
    assert who["email"] in rejects.read_text()

    with served.client(timeout=30) as client:
        record(client, history(who, tag))
        record(client, history(other, other_tag))
        assert embedded(platform).wait_until_projected()
        customer = customer_of(platform, who["id"])
        kept = customer_of(platform, other["id"])
        before = {
            "pyramid": client.get("/v1/analytics/pyramid").json(),
            "satisfaction": client.get("/v1/analytics/satisfaction").json(),
        }
        exported = client.get(f"/v1/customers/{customer}/export").json()
        assert len(exported["touchpoints"]) == 4
        assert who["email"] in json.dumps(exported)  # the export holds it, decrypted

        erased = client.delete(f"/v1/customers/{customer}")
        assert erased.status_code == 202, erased.text
        assert len(erased.json()["streams"]) == 2  # the merged pair, both
        assert erased.json()["reject_lines_removed"] == 1
        assert embedded(platform).wait_until_projected()

        values = personal_values(who, tag)
        absent(values, every_row(platform.database_url), "a table")
        absent(values, everything(client, customer), "an answer")
        absent(values, rejects.read_text(), "the reject file")
        assert other["email"] in rejects.read_text()
        absent(values, "\n".join(r.getMessage() for r in caplog.records), "the logs")

        # The other customer keeps everything; the anonymous aggregates are unchanged.
        assert other["email"] in json.dumps(client.get(f"/v1/customers/{kept}").json())
        assert client.get("/v1/analytics/pyramid").json()["tiers"] == before["pyramid"]["tiers"]
        satisfaction = client.get("/v1/analytics/satisfaction").json()
        assert satisfaction["overall"] == before["satisfaction"]["overall"]
        timeline = client.get(f"/v1/customers/{customer}/timeline").json()
        assert timeline["total"] == 4  # the touchpoints stay, without their personal data

        assert client.get("/v1/customers", params={"email": who["email"]}).json()["customers"] == []
        again = client.delete(f"/v1/customers/{customer}")
        assert again.status_code == 202 and again.json()["already_erased"] is True

        # The same e-mail again is somebody new.
        record(client, [envelope({"email": who["email"]}, "2026-02-01T10:00:00Z")])
        found = client.get("/v1/customers", params={"email": who["email"]}).json()["customers"]
        assert [f["customer_id"] for f in found] != [customer] and len(found) == 1

        actions = [e["action"] for e in client.get("/v1/audit").json()["items"]]
        assert actions[:4] == ["erase", "export", "erase", "export"]  # newest first


def test_a_replay_after_an_erasure_shows_no_personal_data(
    platform: Platform, served: Served
) -> None:
    tag = f"replay{uuid.uuid4().hex[:6]}"
    who = person(tag)
    with served.client(timeout=30) as client:
        record(client, history(who, tag))
        assert embedded(platform).wait_until_projected()
        customer = customer_of(platform, who["id"])
        assert client.delete(f"/v1/customers/{customer}").status_code == 202
        assert embedded(platform).wait_until_projected()
        live = client.get(f"/v1/customers/{customer}").json()
        replay(platform.records, platform.store, batch_size=2)
        rebuilt = client.get(f"/v1/customers/{customer}").json()
        absent(personal_values(who, tag), json.dumps(rebuilt), "the replayed customer")
        for answer in (live, rebuilt):
            answer.pop("computed_at", None)
        assert rebuilt["touchpoints_total"] == live["touchpoints_total"] == 4
        assert rebuilt["spend_by_currency"] == live["spend_by_currency"]
        platform.records.index_identities(rebuild=True)
        absent(personal_values(who, tag), every_row(platform.database_url), "a table")


def test_a_merged_id_is_erased_with_its_survivor(platform: Platform, served: Served) -> None:
    tag = f"merged{uuid.uuid4().hex[:6]}"
    who = person(tag)
    with served.client(timeout=30, follow_redirects=False) as client:
        record(client, history(who, tag))
        assert embedded(platform).wait_until_projected()
        survivor = customer_of(platform, who["id"])
        absorbed = next(s for s in platform.records.identity.members(survivor) if s != survivor)
        moved = client.delete(f"/v1/customers/{absorbed}")
        assert moved.status_code == 307
        assert moved.json()["merged_into"] == survivor
        assert client.delete(moved.headers["location"]).status_code == 202


def test_an_unknown_customer_is_404_and_needs_admin(
    platform: Platform, served: Served, serve: Callable[[Platform], Served]
) -> None:
    with served.client() as client:
        assert client.delete("/v1/customers/cus_nobody").status_code == 404
        assert client.get("/v1/customers/cus_nobody/export").status_code == 404


def test_the_export_holds_everything_stored_about_the_customer(
    platform: Platform, served: Served
) -> None:
    tag = f"export{uuid.uuid4().hex[:6]}"
    who = person(tag)
    with served.client(timeout=30) as client:
        record(client, history(who, tag))
        record(
            client,
            [
                envelope(
                    {"email": who["email"]},
                    "2026-01-09T10:00:00Z",
                    type="consent_given",
                    payload={"purpose": "marketing"},
                )
            ],
        )
        assert embedded(platform).wait_until_projected()
        customer = customer_of(platform, who["id"])
        exported = client.get(f"/v1/customers/{customer}/export").json()
    assert exported["customer_id"] == customer
    assert {t["event_id"] for t in exported["touchpoints"]} == {
        t.event_id for t in platform.records.touchpoints_of(customer)
    }
    assert len(exported["touchpoints"]) == 5
    notes = [t["payload"].get("note") for t in exported["touchpoints"]]
    assert f"Call me at home, {tag} Street 5" in notes  # decrypted
    assert {i["value"] for i in exported["profile"]["identifiers"]} >= set(who.values())
    assert exported["profile"]["consents"]["marketing"]["granted"] is True
    assert len(exported["streams"]) == 2 and len(exported["merges"]) == 1
    assert [j["journey_id"] for j in exported["journeys"]] == [f"J-{tag}"]
    assert exported["profile"]["total_spend"] is not None


def test_erasures_at_once_record_one_erasure(platform: Platform, served: Served) -> None:
    from concurrent.futures import ThreadPoolExecutor

    tag = f"race{uuid.uuid4().hex[:6]}"
    who = person(tag)
    with served.client(timeout=30) as client:
        record(client, history(who, tag))
        assert embedded(platform).wait_until_projected()
        customer = customer_of(platform, who["id"])

        def erase(_: int) -> dict[str, Any]:
            with served.client(timeout=60) as own:
                answer = own.delete(f"/v1/customers/{customer}")
                assert answer.status_code == 202, answer.text
                body: dict[str, Any] = answer.json()
                return body

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(erase, range(8)))
    assert sorted(a["already_erased"] for a in answers) == [False] + [True] * 7
    erasures = [
        e
        for e in platform.records.events.get(customer_aggregate_id(customer))
        if isinstance(e, Customer.Erased)
    ]
    assert len(erasures) == 1
