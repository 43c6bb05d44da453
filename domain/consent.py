"""Consent per purpose: what a customer allowed us to do with their data, and since when.

A customer gives or withdraws consent for one **purpose** at a time (``marketing``,
``surveys``, ``profiling``...) with a ``consent_given`` or ``consent_withdrawn``
touchpoint. Each such touchpoint is one ``ConsentDecision``; a customer's ``Consents``
is the set of every decision recorded for them, so it is a pure fold of their
touchpoints: arrival order, re-sends, identity merges and splits, and an erasure
followed by a refold all give the value the remaining touchpoints give.

The rule (``Consents.state``), per purpose: **the latest decision by event time
decides**. At equal event times a withdrawal wins over a grant (the safe side), and
among decisions of the same kind at the same instant the greater ``event_id`` decides
(any fixed order would do; this one is the same live and on every replay).

The check consumers call (alert rules, webhooks, exports: each declares the purpose it
serves) is ``permits(consents, purpose, at)``: **opt-in**, so no recorded decision
means not permitted, and a withdrawal stops a grant from the withdrawal's event time
on (at that instant included).

Pure: no clock, no I/O, no settings. The caller says which instant it asks about.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

PURPOSE_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
PURPOSE_RULE = (
    "a purpose is a lower-case name such as marketing: a letter, then at most 39 "
    "lower-case letters, digits or '_'"
)
_PURPOSE = re.compile(PURPOSE_PATTERN)

CONSENT_GIVEN = "consent_given"
CONSENT_WITHDRAWN = "consent_withdrawn"
CONSENT_TYPES = frozenset({CONSENT_GIVEN, CONSENT_WITHDRAWN})


class ConsentError(ValueError):
    """A consent question that cannot be answered as asked (a purpose that is not a
    purpose name, an instant without a timezone)."""


class ConsentMethod(StrEnum):
    """How a decision was captured: what a controller shows to demonstrate consent
    (GDPR Art. 7(1)) or to honour a withdrawal."""

    WEB_FORM = "web_form"  # an unticked box or a toggle, ticked by the customer
    APP = "app"  # the same, in our app
    DOUBLE_OPT_IN = "double_opt_in"  # confirmed by a link sent to the address given
    PAPER_FORM = "paper_form"  # signed on paper (evidence_ref: the form's number)
    VERBAL = "verbal"  # said to a person (captured_by: who; evidence_ref: the recording)
    EMAIL_REPLY = "email_reply"
    PREFERENCE_CENTER = "preference_center"
    UNSUBSCRIBE_LINK = "unsubscribe_link"  # a withdrawal by the link in a message
    IMPORT = "import"  # taken over from another system (evidence_ref: its record)
    OTHER = "other"


def purpose_name(value: str) -> str:
    """``value`` if it is a purpose name (``PURPOSE_PATTERN``), else ``ConsentError``.

    A consumer that declares the purpose it serves checks its declaration with this, so
    that a typo ("Marketing", "market ing") fails at configuration time instead of
    silently never being permitted."""
    if not isinstance(value, str) or not _PURPOSE.fullmatch(value):
        raise ConsentError(f"{value!r} is not a purpose name; {PURPOSE_RULE}")
    return value


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ConsentError(f"{at.isoformat()} has no timezone: consent is judged at an instant")
    return at


def _optional(text: str | None) -> tuple[bool, str]:
    return (text is not None, text or "")


@dataclass(frozen=True)
class ConsentDecision:
    """One consent touchpoint: ``granted`` (consent_given) or not (consent_withdrawn)
    for ``purpose``, at event time ``at``, by touchpoint ``event_id`` on ``channel``;
    ``policy_version`` names the notice the customer was shown, ``method`` how it was
    captured, ``evidence_ref`` where the proof is kept, ``captured_by`` who or what
    system took it."""

    purpose: str
    granted: bool
    at: datetime
    event_id: str
    channel: str
    policy_version: str | None = None
    method: str | None = None
    evidence_ref: str | None = None
    captured_by: str | None = None

    def __post_init__(self) -> None:
        purpose_name(self.purpose)
        _aware(self.at)

    @property
    def rank(self) -> tuple[datetime, bool, str]:
        """The order decisions take effect in: event time, then a withdrawal after a
        grant at the same instant, then ``event_id``."""
        return (self.at, not self.granted, self.event_id)

    def _order(self) -> tuple[object, ...]:
        # rank, then every other field: two different decisions never compare equal,
        # so a document lists them the same way whatever order they came in.
        return (
            *self.rank,
            self.channel,
            _optional(self.policy_version),
            _optional(self.method),
            _optional(self.evidence_ref),
            _optional(self.captured_by),
        )


@dataclass(frozen=True)
class PurposeState:
    """The consent state of one purpose at some instant: ``granted`` or not, held
    without interruption ``since`` (the earliest decision of the current run of equal
    decisions), and the ``decision`` that decides it (the latest, by ``rank``)."""

    purpose: str
    granted: bool
    since: datetime
    decision: ConsentDecision


@dataclass(frozen=True)
class Consents:
    """Every consent decision of one customer, in ``ConsentDecision.rank`` order, each
    once. Build it with ``Consents.of(decisions)`` or fold decisions in one at a time
    with ``with_decision``; both give the same value for the same set of decisions."""

    decisions: tuple[ConsentDecision, ...] = field(default=())

    @classmethod
    def of(cls, decisions: Iterable[ConsentDecision]) -> Consents:
        return cls(tuple(sorted(set(decisions), key=ConsentDecision._order)))

    def with_decision(self, decision: ConsentDecision) -> Consents:
        """The fold: ``decision`` added where its rank puts it. A decision already held
        (a re-sent touchpoint) changes nothing, so the result depends on the set of
        decisions only, never on their arrival order or repeats."""
        if decision in self.decisions:
            return self
        return Consents.of((*self.decisions, decision))

    def purposes(self) -> tuple[str, ...]:
        """Every purpose a decision was ever recorded for, in alphabetical order."""
        return tuple(sorted({d.purpose for d in self.decisions}))

    def history(self, purpose: str | None = None) -> tuple[ConsentDecision, ...]:
        """The decisions (of ``purpose``, or all), in the order they take effect."""
        return tuple(d for d in self.decisions if purpose is None or d.purpose == purpose)

    def state(self, purpose: str, at: datetime | None = None) -> PurposeState | None:
        """The state of ``purpose`` as of ``at`` (every recorded decision when None):
        the latest decision by rank with event time at or before ``at`` decides; None
        when there is none (nothing was ever decided, by then)."""
        purpose_name(purpose)
        held = [d for d in self.history(purpose) if at is None or d.at <= _aware(at)]  # rank order
        if not held:
            return None
        decision = held[-1]
        since = decision.at
        for earlier in reversed(held[:-1]):
            if earlier.granted != decision.granted:
                break
            since = earlier.at
        return PurposeState(purpose, decision.granted, since, decision)

    def current(self) -> dict[str, PurposeState]:
        """The state of every purpose ever decided, after every recorded decision."""
        states = {purpose: self.state(purpose) for purpose in self.purposes()}
        return {purpose: state for purpose, state in states.items() if state is not None}


def decision_of(
    kind: str, payload: dict[str, object], *, at: datetime, event_id: str, channel: str
) -> ConsentDecision:
    """The decision a ``consent_given`` or ``consent_withdrawn`` touchpoint records
    (its payload as ``domain.touchpoints`` validated it)."""
    if kind not in CONSENT_TYPES:
        raise ConsentError(f"{kind!r} is not a consent touchpoint type")

    def text(name: str) -> str | None:
        value = payload.get(name)
        return value if isinstance(value, str) else None

    purpose = payload.get("purpose")
    return ConsentDecision(
        purpose=purpose if isinstance(purpose, str) else "",
        granted=kind == CONSENT_GIVEN,
        at=at,
        event_id=event_id,
        channel=channel,
        policy_version=text("policy_version"),
        method=text("method"),
        evidence_ref=text("evidence_ref"),
        captured_by=text("captured_by"),
    )


def permits(consents: Consents, purpose: str, at: datetime | None = None) -> bool:
    """Whether ``purpose`` may be served for this customer at instant ``at``.

    Opt-in: True only if the latest decision for ``purpose`` by event time, at or
    before ``at``, is a grant (at equal instants a withdrawal wins). No decision, or a
    withdrawal, means False; a withdrawal takes effect at its own event time, even when
    it is recorded late. ``at`` None asks about the state after every recorded decision
    (the customer document's ``consents``); a consumer acting on a touchpoint passes
    that touchpoint's event time, one acting now passes the current time. A purpose
    that is not a purpose name raises ``ConsentError``."""
    state = consents.state(purpose, at)
    return state is not None and state.granted
