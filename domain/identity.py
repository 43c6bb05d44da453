"""Identity resolution (DOMAIN.md §1, *Identify*): which customer a touchpoint belongs to.

A customer is one or more *streams* (each created for a touchpoint that no known
identifier named) joined by merges into a *group* whose *survivor* answers for all of
them. Identifiers (a normalised kind and value) are linked to the stream that first
carried them. ``resolve`` decides, for a batch of touchpoints and what the identity index
knows of their identifiers, where each touchpoint is recorded, which identifiers it
links, which groups it merges and which merges the guard rails refuse. It is pure: the
recorder looks the facts up (one query a batch) and writes what it decides in the same
transaction as the events.

The rules, in order:
- A blocked value (``IdentityRules.blocked``: placeholders such as ``guest`` or
  ``test@example.com``, and values a setting declares, like a shared kiosk device) never
  links and never merges. A touchpoint naming its customer by blocked values only starts
  a new customer: it cannot be recognised.
- No known identifier: a new customer, with an opaque random id, and every identifier
  linked to it.
- Known identifiers of one group: that group. The touchpoint is recorded on the one stream
  owning them all (so that a split gives it back), else on the survivor.
- Known identifiers of two or more groups prove one person: they merge into the group
  first seen earliest (by event time; ties: the smaller customer id), unless a guard rail
  refuses: two different source ids (``id``), a pair kept apart by a split, or a kind
  over its limit in the merged customer. A refused merge records the touchpoint on the
  group that its strongest identifier names (kind order: ``IDENTIFIER_KINDS``), links none
  of its new identifiers, and is reported (``Refusal``).
- A new identifier is linked unless its kind is at its limit on the customer
  (``limit`` refusal: the touchpoint is recorded, the identifier is not linked).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from domain.touchpoints import IDENTIFIER_KINDS

Identifier = tuple[str, str]  # (kind, normalised value)

# The default limits of identifiers per kind on one customer; kinds not named: 10.
DEFAULT_LIMITS: Mapping[str, int] = {
    "id": 1,
    "email": 3,
    "phone": 3,
    "loyalty_card": 5,
    "device_id": 10,
}
DEFAULT_LIMIT = 10

# Values that name nobody, whatever the kind (compared trimmed and case-folded).
PLACEHOLDERS = frozenset(
    {"", "null", "none", "nil", "undefined", "anonymous", "guest", "unknown", "n/a", "na", "-1"}
)
_ZEROS = re.compile(r"^\+?0+$")  # "0", "000000", "+0000"
_PLACEHOLDER_MAILBOXES = frozenset(
    {"noemail", "no-email", "noreply", "no-reply", "nobody", "test", *PLACEHOLDERS}
)

# Why a merge or a link was refused.
SOURCE_IDS_DIFFER = "source_ids_differ"
KEPT_APART = "kept_apart"
LIMIT = "limit"


def new_customer_id() -> str:
    """An opaque customer id, random: derived from no identifier, so knowing a customer's
    e-mail address says nothing about their id."""
    return f"cus_{uuid.uuid4().hex}"


@dataclass(frozen=True)
class IdentityRules:
    """The guard rails: identifiers per kind on one customer, and blocked values
    (``blocked`` holds ``kind:value`` pairs, or bare values blocked for every kind)."""

    limits: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    default_limit: int = DEFAULT_LIMIT
    blocked: frozenset[str] = frozenset()

    def limit(self, kind: str) -> int:
        return self.limits.get(kind, self.default_limit)

    def is_blocked(self, kind: str, value: str) -> bool:
        """A placeholder, a run of zeros, a placeholder e-mail address, or a value
        declared in ``blocked``: it names nobody in particular."""
        folded = value.strip().casefold()
        if folded in PLACEHOLDERS or _ZEROS.fullmatch(folded):
            return True
        if f"{kind}:{folded}" in self.blocked or folded in self.blocked:
            return True
        if kind == "email":
            # Mailboxes that name nobody; the domain does not matter (test@example.com,
            # noreply@shop.de). Example domains themselves are allowed: test data uses them.
            return folded.rpartition("@")[0] in _PLACEHOLDER_MAILBOXES
        return False

    def usable(self, identifiers: Mapping[str, str]) -> list[Identifier]:
        """A touchpoint's identifiers that may link and merge, strongest kind first."""
        return [(k, v) for k, v in _by_strength(identifiers) if not self.is_blocked(k, v)]


def blocked_setting(values: Iterable[str]) -> frozenset[str]:
    """The ``blocked`` setting's entries as ``is_blocked`` compares them."""
    return frozenset(value.strip().casefold() for value in values)


def identifier_digest(secret: bytes, kind: str, value: str) -> bytes:
    """The keyed hash an identifier is known by outside the events: HMAC-SHA256 under
    ``secret`` (the ``identity_secret`` setting) of ``kind:value``, the value normalised.

    Keyed, never a plain hash: e-mail addresses, phone numbers and card numbers are few
    enough to hash every candidate, so a plain digest would give the value away to anyone
    holding the table; without the secret this one names nobody. The same identifier
    always gives the same digest under one secret (look-ups, partition keys)."""
    if not secret:
        raise ValueError("identity secret: empty; an unkeyed digest is a plain hash")
    # surrogatepass: a value read back from an old event is digested, whatever it holds.
    message = f"{kind}:{value}".encode("utf-8", "surrogatepass")
    return hmac.new(secret, message, hashlib.sha256).digest()


def source_key(identifiers: Mapping[str, str], secret: bytes) -> str:
    """The identifier the source knows a touchpoint's customer by (its strongest), as its
    digest in hex (``identifier_digest``): what cluster mode keys a touchpoint message
    by. A topic's keys are visible to any reader of it: the value is not among them."""
    kind, value = _by_strength(identifiers)[0]
    return identifier_digest(secret, kind, value).hex()


def _by_strength(identifiers: Mapping[str, str]) -> list[Identifier]:
    declared = sorted(kind for kind in identifiers if kind not in IDENTIFIER_KINDS)
    return [(k, identifiers[k]) for k in (*IDENTIFIER_KINDS, *declared) if k in identifiers]


@dataclass
class Group:
    """What resolution needs to know of a customer group: its identifiers per kind
    (counts), and a token per source id, only ever counted: the identity index gives
    their digests, a batch gives the values it links (a value is known to the index or
    new in the batch, so never in both forms)."""

    counts: dict[str, int] = field(default_factory=dict)
    source_ids: set[str] = field(default_factory=set)

    def add(self, kind: str, value: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "id":
            self.source_ids.add(value)

    def absorb(self, other: Group) -> None:
        for kind, n in other.counts.items():
            self.counts[kind] = self.counts.get(kind, 0) + n
        self.source_ids |= other.source_ids


@dataclass
class Known:
    """What the identity index knows of a batch's identifiers: the stream owning each,
    each stream's survivor, each group's identifiers, and the pairs of streams a split
    keeps apart (those touching the batch's groups)."""

    owners: dict[Identifier, str] = field(default_factory=dict)
    survivors: dict[str, str] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    kept_apart: set[frozenset[str]] = field(default_factory=set)


@dataclass(frozen=True)
class Placement:
    """Where one touchpoint goes: ``stream`` records it, ``survivor`` answers for it;
    ``registers`` when the stream is new."""

    stream: str
    survivor: str
    registers: bool


@dataclass(frozen=True)
class Link:
    stream: str
    touchpoint: int  # index in the batch
    identifiers: dict[str, str]


@dataclass(frozen=True)
class Merge:
    survivor: str
    absorbed: str
    touchpoint: int
    identifiers: dict[str, str]  # what proved them one: the touchpoint's usable identifiers


@dataclass(frozen=True)
class Refusal:
    """A merge or a link the guard rails refused, reported on ``stream``."""

    stream: str
    touchpoint: int
    rule: str
    reason: str
    identifiers: dict[str, str]
    customers: tuple[str, ...]


@dataclass
class Resolution:
    placements: list[Placement] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    merges: list[Merge] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)


@dataclass(frozen=True)
class Arrival:
    """What resolution reads of a touchpoint."""

    identifiers: Mapping[str, str]
    occurred_at: datetime


FirstSeen = Callable[[Sequence[str]], Mapping[str, datetime]]


def resolve(
    arrivals: Sequence[Arrival],
    known: Known,
    rules: IdentityRules,
    first_seen: FirstSeen,
    new_id: Callable[[], str] = new_customer_id,
) -> Resolution:
    """Place each touchpoint in turn, each seeing what the ones before it linked and
    merged. ``first_seen(survivors)`` gives the earliest event time of each group the
    store holds (asked only when groups merge); ``known`` is updated as resolution goes."""
    out = Resolution()
    seen_in_batch: dict[str, datetime] = {}  # survivor -> earliest touchpoint of the batch
    for n, arrival in enumerate(arrivals):
        usable = rules.usable(arrival.identifiers)
        owned = [(ident, known.owners[ident]) for ident in usable if ident in known.owners]
        fresh = [ident for ident in usable if ident not in known.owners]
        groups = list(dict.fromkeys(known.survivors[owner] for _, owner in owned))
        if not groups:
            stream = new_id()
            known.survivors[stream] = stream
            known.groups[stream] = Group()
            placement = Placement(stream, stream, registers=True)
        elif len(groups) == 1:
            owners = {owner for _, owner in owned}
            stream = owners.pop() if len(owners) == 1 else groups[0]
            placement = Placement(stream, groups[0], registers=False)
        else:
            refusal = _refused(n, usable, fresh, owned, groups, known, rules)
            if refusal is not None:
                out.refusals.append(refusal)
                out.placements.append(Placement(refusal.stream, groups[0], registers=False))
                _seen(seen_in_batch, groups[0], arrival.occurred_at)
                continue
            survivor = _earliest(groups, first_seen, seen_in_batch)
            for absorbed in groups:
                if absorbed != survivor:
                    out.merges.append(Merge(survivor, absorbed, n, dict(usable)))
                    _merge(known, survivor, absorbed, seen_in_batch)
            placement = Placement(survivor, survivor, registers=False)
        out.placements.append(placement)
        _seen(seen_in_batch, placement.survivor, arrival.occurred_at)
        _link(out, n, placement, fresh, known, rules)
    return out


def _link(
    out: Resolution,
    n: int,
    placement: Placement,
    fresh: Sequence[Identifier],
    known: Known,
    rules: IdentityRules,
) -> None:
    group = known.groups.setdefault(placement.survivor, Group())
    linked: dict[str, str] = {}
    for kind, value in fresh:
        if group.counts.get(kind, 0) >= rules.limit(kind):
            out.refusals.append(
                Refusal(
                    placement.stream,
                    n,
                    LIMIT,
                    f"{kind}: the customer has {rules.limit(kind)}, the limit; {kind} not linked",
                    {kind: value},
                    (placement.survivor,),
                )
            )
            continue
        group.add(kind, value)
        known.owners[(kind, value)] = placement.stream
        linked[kind] = value
    if linked:
        out.links.append(Link(placement.stream, n, linked))


def _refused(
    n: int,
    usable: Sequence[Identifier],
    fresh: Sequence[Identifier],
    owned: Sequence[tuple[Identifier, str]],
    groups: Sequence[str],
    known: Known,
    rules: IdentityRules,
) -> Refusal | None:
    """The guard rail a merge of ``groups`` breaks, if any, reported on the group its
    strongest owned identifier names (``groups[0]``: they are in strength order)."""
    at = known.owners[owned[0][0]]
    involved = tuple(groups)
    source_ids = set().union(*(known.groups[g].source_ids for g in groups))
    if len(source_ids) > 1:
        return Refusal(
            at,
            n,
            SOURCE_IDS_DIFFER,
            # The source ids are not named: a reason is kept and shown as it is.
            f"id: the customers are {len(source_ids)} records of the source system; "
            "they are never merged automatically",
            dict(usable),
            involved,
        )
    for pair in known.kept_apart:
        a, b = tuple(pair)
        sa, sb = known.survivors.get(a, a), known.survivors.get(b, b)
        if sa != sb and sa in groups and sb in groups:
            return Refusal(
                at,
                n,
                KEPT_APART,
                f"customers {a} and {b} were split apart; they are not merged again",
                dict(usable),
                involved,
            )
    totals = Group()
    for g in groups:
        totals.absorb(known.groups[g])
    for kind, value in fresh:
        totals.add(kind, value)
    for kind, count in sorted(totals.counts.items()):
        if count > rules.limit(kind):
            return Refusal(
                at,
                n,
                LIMIT,
                f"{kind}: merged, the customer would have {count}, over the limit of "
                f"{rules.limit(kind)}",
                dict(usable),
                involved,
            )
    return None


def _earliest(
    groups: Sequence[str], first_seen: FirstSeen, seen_in_batch: Mapping[str, datetime]
) -> str:
    """The group first seen earliest, by event time (the store's and the batch's);
    a tie goes to the smaller customer id."""
    stored = first_seen(groups)

    def seen(group: str) -> tuple[datetime, str]:
        times = [t for t in (stored.get(group), seen_in_batch.get(group)) if t is not None]
        if not times:
            raise ValueError(f"customer {group}: no touchpoint, no first-seen time")
        return min(times), group

    return min(groups, key=seen)


def _merge(known: Known, survivor: str, absorbed: str, seen: dict[str, datetime]) -> None:
    for stream, current in list(known.survivors.items()):
        if current == absorbed:
            known.survivors[stream] = survivor
    known.groups.setdefault(survivor, Group()).absorb(known.groups.pop(absorbed, Group()))
    if absorbed in seen:
        _seen(seen, survivor, seen.pop(absorbed))


def _seen(seen: dict[str, datetime], group: str, at: datetime) -> None:
    if group not in seen or at < seen[group]:
        seen[group] = at
