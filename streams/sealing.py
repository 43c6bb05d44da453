"""Per-customer encryption of personal fields in the event store (crypto-shredding).

Every customer stream (an event's ``originator_id``) has its own random 256-bit data key,
kept in the ``customer_key`` table wrapped (AES-GCM) by the master key, with the stream id
as associated data: a wrapped key moved to another stream's row does not unwrap. Erasing a
customer deletes its streams' keys (``Keyring.destroy``); the events stay as they are,
and their personal fields can no longer be read by anyone.

The per-customer step sits in the mapping of events to stored records (``SealingMapper``,
an eventsourcing ``Mapper``): eventsourcing's own cipher has one key per application. For
the personal fields of an event (``PersonalFields``) the mapper moves their values out of
the event's state into ONE sealed blob (one nonce, one AES-GCM encryption per event; the
associated data binds the stream id and version, so a blob copied to another event does
not open), stored beside the clear fields as ``state["sealed"]``, base64 text of::

    0x01 | key id (8 bytes) | nonce (12 bytes) | ciphertext and tag

Everything else stays clear (event id, type, times, channel, journey, emotion, amounts,
items, scores, opaque customer ids), so counts, revenue, NPS and the pyramid are the same
after an erasure. An event whose stream key is gone reads back in its *erased shape*:
identifiers ``{}``, a refusal's reason ``""``, personal payload and ``additional`` keys
absent. An event stored before sealing (no blob) reads as it was stored.

Keys are loaded for a whole batch of streams in one query (``Keyring.keys``); unwrapped
keys are cached in memory for ``cache_seconds`` at most (``settings.key_cache_seconds``),
so an erasure in another process takes effect here within that time. Only keys found
are cached, never a stream's lack of one (its first events may be committing elsewhere).
A stream's first key is inserted in the same transaction as the events it seals
(``customer_keys`` in the recorder's insert kwargs); the table's primary key makes a
concurrent creation of the same stream's key fail one transaction, which the recorder
retries on fresh keys.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    Cipher,
    Compressor,
    Mapper,
    MapperDeserialisationError,
    StoredEvent,
    Transcoder,
    find_id_convertor,
)
from eventsourcing.utils import get_topic, resolve_topic
from psycopg.sql import SQL, Composed, Identifier

from domain.customer import Customer

log = logging.getLogger(__name__)

KEY_TABLE = "customer_key"
SEALED = "sealed"  # the state field holding the sealed blob
_FORMAT = b"\x01"
_KID_BYTES, _NONCE_BYTES = 8, 12
_SEAL_AAD = b"peakend/sealed/1/"
_WRAP_AAD = b"peakend/customer-key/1/"
ALL = "*"

# Fields whose whole value is personal, per event class, and the value an event whose key
# is gone reads back with.
_WHOLE: dict[type, dict[str, Callable[[], Any]]] = {
    Customer.TouchpointRecorded: {"identifiers": dict},
    Customer.IdentifiersLinked: {"identifiers": dict},
    Customer.Merged: {"identifiers": dict},
    # A refusal's reason can name identifiers (the source ids that differ).
    Customer.IdentityRefused: {"identifiers": dict, "reason": str},
    # An operator's words on why a merge was wrong: free text, often naming the person.
    Customer.Split: {"reason": str},
}
# Events that may carry a sealed blob, by how their topic ends (key loads skip the rest).
SEALED_TOPICS = tuple(cls.__qualname__ for cls in _WHOLE)


class SealingError(RuntimeError):
    """A personal field could not be sealed (no data key prepared for its stream)."""


@dataclass(frozen=True)
class PersonalFields:
    """Which fields of a touchpoint are personal, besides its identifiers: ``payload``
    keys and ``additional`` keys ("*": every key), as the settings name them."""

    payload: frozenset[str]
    additional: frozenset[str]

    @classmethod
    def of(cls, payload: Collection[str], additional: Collection[str]) -> PersonalFields:
        return cls(frozenset(payload), frozenset(additional))

    def take(self, event_class: type, state: dict[str, Any]) -> dict[str, Any]:
        """Move the personal fields of an event's ``state`` out of it (the state is
        changed); return them (empty when the event holds none)."""
        whole = _WHOLE.get(event_class)
        if whole is None:
            return {}
        taken = {name: state.pop(name) for name in whole if name in state}
        if event_class is Customer.TouchpointRecorded:
            for name, chosen in (("payload", self.payload), ("additional", self.additional)):
                part = state.get(name)
                if not part:
                    continue
                personal = part if ALL in chosen else {k: v for k, v in part.items() if k in chosen}
                if personal:
                    taken[name] = dict(personal)
                    state[name] = {k: v for k, v in part.items() if k not in personal}
        return {k: v for k, v in taken.items() if v}


def _put_back(event_class: type, state: dict[str, Any], personal: Mapping[str, Any]) -> None:
    """Merge opened personal fields back into ``state``; payload and ``additional`` are
    merged key by key, other fields set whole."""
    for name, value in personal.items():
        if event_class is Customer.TouchpointRecorded and name in ("payload", "additional"):
            state[name] = {**(state.get(name) or {}), **value}
        else:
            state[name] = value


def _erased(event_class: type, state: dict[str, Any]) -> None:
    """The erased shape: whole personal fields present but empty (what was sealed of the
    payload and ``additional`` is simply absent)."""
    for name, empty in _WHOLE.get(event_class, {}).items():
        state.setdefault(name, empty())


# -- keys -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataKey:
    """A stream's unwrapped data key, ready to seal and open; ``kid`` names it in each
    blob, so a blob sealed under a key since destroyed reads as erased even when a new
    key was made for its stream afterwards."""

    aead: AESGCM
    kid: bytes

    @classmethod
    def of(cls, key: bytes) -> DataKey:
        return cls(AESGCM(key), hashlib.sha256(b"peakend/kid/" + key).digest()[:_KID_BYTES])


def create_statements(schema: str) -> list[Composed]:
    return [
        SQL(
            "CREATE TABLE IF NOT EXISTS {} (stream uuid PRIMARY KEY, wrapped bytea NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now())"
        ).format(Identifier(schema, KEY_TABLE))
    ]


def insert_statement(schema: str) -> Composed:
    """Insert new keys (streams, wrapped keys). No ON CONFLICT: a key another writer made
    for one of the streams meanwhile fails the transaction, which is retried."""
    return SQL(
        "INSERT INTO {} (stream, wrapped) SELECT * FROM unnest(%b::uuid[], %b::bytea[])"
    ).format(Identifier(schema, KEY_TABLE))


def delete_statement(schema: str) -> Composed:
    """Destroy the keys of streams (an erasure), in the transaction of its event."""
    return SQL("DELETE FROM {} WHERE stream = ANY(%b::uuid[])").format(
        Identifier(schema, KEY_TABLE)
    )


Load = Callable[[Sequence[UUID]], dict[UUID, bytes]]


class Keyring:
    """Customer data keys: made, wrapped and unwrapped under the master key, loaded a
    batch of streams at a time, cached (unwrapped) for ``cache_seconds`` at most.

    ``load`` fetches the wrapped keys of some streams (one query); ``attach`` sets it to
    the ``customer_key`` table of a PostgreSQL schema."""

    def __init__(
        self,
        master_key: bytes,
        *,
        cache_seconds: float,
        load: Load | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if len(master_key) != 32:
            raise ValueError("master_key: 32 bytes")
        self._master = AESGCM(master_key)
        self.cache_seconds = cache_seconds
        self._load = load
        self._clock = clock
        self._schema = "public"
        # stream -> (expiry, key): a short-lived view of the table (keys found only).
        self._cache: dict[UUID, tuple[float, DataKey]] = {}
        self._lock = threading.Lock()
        self._next_prune = 0.0
        self.queries = 0  # key loads that went to the store (tests count them)

    # -- wrapping -------------------------------------------------------------------

    def wrap(self, stream: UUID, key: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._master.encrypt(nonce, key, _WRAP_AAD + stream.bytes)

    def unwrap(self, stream: UUID, wrapped: bytes) -> bytes:
        """The data key; raises ``InvalidTag`` for a key wrapped for another stream or
        under another master key."""
        nonce, sealed = wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:]
        return self._master.decrypt(nonce, sealed, _WRAP_AAD + stream.bytes)

    # -- the store ------------------------------------------------------------------

    def attach(self, schema: str, connect: Callable[[], Any]) -> None:
        """Load keys from ``<schema>.customer_key``; ``connect()`` is a context manager
        giving a psycopg 3 connection with dict rows (eventsourcing's datastore)."""
        self._schema = schema
        query = SQL("SELECT stream, wrapped FROM {} WHERE stream = ANY(%s)").format(
            Identifier(schema, KEY_TABLE)
        )

        def load(streams: Sequence[UUID]) -> dict[UUID, bytes]:
            with connect() as conn, conn.cursor() as cursor:
                cursor.execute(query, (list(streams),))
                return {row["stream"]: bytes(row["wrapped"]) for row in cursor.fetchall()}

        self._load = load

    def keys(self, streams: Iterable[UUID]) -> KeyBatch:
        """The data keys of a batch of streams: from the cache while fresh, the others in
        ONE query."""
        now = self._clock()
        found: dict[UUID, DataKey | None] = {}
        missing: list[UUID] = []
        for stream in set(streams):
            cached = self._cache.get(stream)
            if cached is not None and cached[0] > now:
                found[stream] = cached[1]
            else:
                missing.append(stream)
        batch = KeyBatch(self, found)
        batch.fetch(missing)
        return batch

    def fetch(self, streams: Sequence[UUID]) -> dict[UUID, DataKey | None]:
        """The keys of ``streams`` from the store (one query; None: the stream has none,
        or it was destroyed). Only keys found are cached: a stream without a key now may
        have one a moment later (another writer's first events), and must not read as
        erased meanwhile."""
        if not streams:
            return {}
        if self._load is None:
            raise SealingError("the keyring is attached to no key store")
        self.queries += 1
        wrapped = self._load(streams)
        found = {s: DataKey.of(self.unwrap(s, w)) for s, w in wrapped.items()}
        self.remember(found)
        return {s: found.get(s) for s in streams}

    def create(
        self, streams: Iterable[UUID]
    ) -> tuple[dict[UUID, DataKey], list[tuple[UUID, bytes]]]:
        """New random data keys for ``streams``, and their rows (stream, wrapped) for the
        insert. Not cached: they exist only once their transaction commits (``remember``)."""
        made: dict[UUID, DataKey] = {}
        rows: list[tuple[UUID, bytes]] = []
        for stream in streams:
            key = AESGCM.generate_key(bit_length=256)
            made[stream] = DataKey.of(key)
            rows.append((stream, self.wrap(stream, key)))
        return made, rows

    def remember(self, keys: Mapping[UUID, DataKey]) -> None:
        """Cache keys whose transaction committed."""
        self._remember(keys, self._clock())

    def _remember(self, keys: Mapping[UUID, DataKey], now: float) -> None:
        if self.cache_seconds <= 0:
            return
        expiry = now + self.cache_seconds
        with self._lock:
            for stream, key in keys.items():
                self._cache[stream] = (expiry, key)
            if now >= self._next_prune:  # at most once per period: O(cached keys)
                self._cache = {s: e for s, e in self._cache.items() if e[0] > now}
                self._next_prune = now + max(self.cache_seconds, 1.0)

    def forget(self, streams: Iterable[UUID]) -> None:
        with self._lock:
            for stream in streams:
                self._cache.pop(stream, None)

    def destroy(self, cursor: Any, streams: Iterable[UUID]) -> int:
        """Delete the keys of ``streams`` in the caller's transaction (a psycopg or
        psycopg2 cursor) and drop them from this process's cache; return how many keys
        were deleted. Other processes stop reading them within ``cache_seconds``."""
        wanted = sorted(set(streams))
        if not wanted:
            return 0
        table = ".".join('"' + part.replace('"', '""') + '"' for part in (self._schema, KEY_TABLE))
        cursor.execute(
            f"DELETE FROM {table} WHERE stream = ANY(%s::uuid[])",  # names quoted above
            ([str(s) for s in wanted],),
        )
        self.forget(wanted)
        return int(cursor.rowcount)


# -- sealing ----------------------------------------------------------------------------


def _aad(stream: UUID, version: int) -> bytes:
    return _SEAL_AAD + stream.bytes + version.to_bytes(8, "big", signed=True)


def seal(key: DataKey, stream: UUID, version: int, plaintext: bytes) -> str:
    """One sealed blob (base64 text) of ``plaintext`` for event ``stream``@``version``."""
    nonce = os.urandom(_NONCE_BYTES)
    blob = _FORMAT + key.kid + nonce + key.aead.encrypt(nonce, plaintext, _aad(stream, version))
    return base64.b64encode(blob).decode("ascii")


def open_sealed(key: DataKey | None, stream: UUID, version: int, sealed: str) -> bytes | None:
    """The plaintext of a sealed blob, or None when its key is gone (no key for the
    stream, or a newer one than sealed it). Raises ``InvalidTag`` (or ``ValueError``)
    for a blob that does not belong to this event or was altered."""
    blob = base64.b64decode(sealed, validate=True)
    if blob[:1] != _FORMAT:
        raise ValueError(f"sealed: unknown format {blob[:1]!r}")
    kid = blob[1 : 1 + _KID_BYTES]
    if key is None or key.kid != kid:
        return None
    nonce = blob[1 + _KID_BYTES : 1 + _KID_BYTES + _NONCE_BYTES]
    return key.aead.decrypt(nonce, blob[1 + _KID_BYTES + _NONCE_BYTES :], _aad(stream, version))


class KeyBatch:
    """The keys one batch of events is read (or sealed) with: what the cache held and
    what one query loaded. A key served from the cache can be older than an event's blob
    (the stream's key destroyed and made anew elsewhere since): ``reread`` asks the store
    once for it."""

    def __init__(self, keyring: Keyring, cached: dict[UUID, DataKey | None]) -> None:
        self._keyring = keyring
        self._keys = cached
        self._loaded: set[UUID] = set()

    def fetch(self, streams: Sequence[UUID]) -> None:
        self._keys.update(self._keyring.fetch(streams))
        self._loaded.update(streams)

    def get(self, stream: UUID) -> DataKey | None:
        if stream not in self._keys:  # not in the batch: alone (one query)
            self.fetch([stream])
        return self._keys[stream]

    def reread(self, stream: UUID) -> DataKey | None:
        if stream not in self._loaded:
            self.fetch([stream])
        return self._keys[stream]

    def __contains__(self, stream: object) -> bool:
        return stream in self._keys


class SealingMapper(Mapper[UUID]):
    """eventsourcing's mapper, with the personal fields of each event sealed under its
    stream's data key (module docstring). ``to_stored_event`` and ``to_domain_event``
    follow the base class's steps (transcode, compress, encrypt, upcast) and add the
    sealing step on the state dict: sealed before transcoding, opened before upcasting,
    so upcasters see the event whole."""

    def __init__(
        self,
        transcoder: Transcoder,
        keyring: Keyring,
        fields: PersonalFields,
        *,
        compressor: Compressor | None = None,
        cipher: Cipher | None = None,
    ) -> None:
        super().__init__(transcoder, compressor=compressor, cipher=cipher)
        self.keyring = keyring
        self.fields = fields
        self._writing = threading.local()

    # -- writing --------------------------------------------------------------------

    @contextmanager
    def writing(self, streams: Iterable[UUID]) -> Iterator[list[tuple[UUID, bytes]]]:
        """Seal events of ``streams`` inside this block, on this thread: each stream's
        key, loaded in one query or made now; yields the new keys' rows, to insert in the
        same transaction as the events. New keys are cached once the block succeeds."""
        wanted = set(streams)
        batch = self.keyring.keys(wanted)
        made, rows = self.keyring.create(s for s in sorted(wanted) if batch.get(s) is None)
        self._writing.keys = {**{s: batch.get(s) for s in wanted}, **made}
        try:
            yield rows
        finally:
            del self._writing.keys
        self.keyring.remember(made)

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        event_class = domain_event.__class__
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        class_version = getattr(event_class, "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        if personal := self.fields.take(event_class, state):
            key = self._sealing_key(originator_id)
            state[SEALED] = seal(
                key, originator_id, originator_version, self.transcoder.encode(personal)
            )
        stored_state = self.transcoder.encode(state)
        if self.compressor:
            stored_state = self.compressor.compress(stored_state)
        if self.cipher:
            stored_state = self.cipher.encrypt(stored_state)
        return StoredEvent(originator_id, originator_version, get_topic(event_class), stored_state)

    def _sealing_key(self, stream: UUID) -> DataKey:
        prepared: dict[UUID, DataKey | None] | None = getattr(self._writing, "keys", None)
        key = prepared.get(stream) if prepared is not None else None
        if key is None:
            raise SealingError(
                f"no data key prepared for stream {stream}: save through CustomerRecords"
            )
        return key

    # -- reading --------------------------------------------------------------------

    def keys_for(self, stored_events: Iterable[StoredEvent]) -> KeyBatch:
        """The keys a batch of stored events needs, in one query (none if the batch holds
        no event that may be sealed)."""
        return self.keyring.keys(
            {cast(UUID, e.originator_id) for e in stored_events if e.topic.endswith(SEALED_TOPICS)}
        )

    def to_domain_event(
        self, stored_event: StoredEvent, keys: KeyBatch | None = None
    ) -> DomainEventProtocol[UUID]:
        """The domain event; ``keys``: the batch's keys (``keys_for``), else the stream's
        key is looked up alone (cached, else one query)."""
        event_class = resolve_topic(stored_event.topic)
        stream = cast(UUID, stored_event.originator_id)
        version = stored_event.originator_version
        with _undecodable(stored_event):
            stored_state = stored_event.state
            if self.cipher:
                stored_state = self.cipher.decrypt(stored_state)
            if self.compressor:
                stored_state = self.compressor.decompress(stored_state)
            state: dict[str, Any] = self.transcoder.decode(stored_state)
            sealed = state.pop(SEALED, None)
        if sealed is not None:
            # Outside the undecodable guard: a store outage is not a bad event.
            batch = keys if keys is not None else self.keyring.keys([stream])
            key = batch.get(stream)
            with _undecodable(stored_event):
                opened = open_sealed(key, stream, version, sealed)
            if opened is None and (newer := batch.reread(stream)) is not key:
                with _undecodable(stored_event):
                    opened = open_sealed(newer, stream, version, sealed)
            if opened is not None:
                with _undecodable(stored_event):
                    _put_back(event_class, state, self.transcoder.decode(opened))
            _erased(event_class, state)
        state["originator_id"] = find_id_convertor(event_class, UUID)(stream)
        state["originator_version"] = stored_event.originator_version
        class_version = getattr(event_class, "class_version", 1)
        from_version = state.pop("class_version", 1)
        while from_version < class_version:
            getattr(event_class, f"upcast_v{from_version}_v{from_version + 1}")(state)
            from_version += 1
        domain_event = object.__new__(event_class)
        object.__setattr__(domain_event, "__dict__", state)
        return cast(DomainEventProtocol[UUID], domain_event)


@contextmanager
def _undecodable(stored_event: StoredEvent) -> Iterator[None]:
    """Raise what fails inside as eventsourcing's deserialisation error, as its mapper
    does (a follower sets such an event aside)."""
    try:
        yield
    except Exception as error:
        raise MapperDeserialisationError(
            f"Failed to deserialise state of stored event with topic "
            f"'{stored_event.topic}', originator_id '{stored_event.originator_id}' and "
            f"originator_version {stored_event.originator_version}: {error!r}"
        ) from error


def decoder(
    mapper: Mapper[UUID], stored_events: Sequence[StoredEvent]
) -> Callable[[StoredEvent], Any]:
    """A function decoding the events of one batch: with a sealing mapper, the batch's
    keys are loaded first, in one query."""
    if isinstance(mapper, SealingMapper):
        keys = mapper.keys_for(stored_events)
        return lambda stored: mapper.to_domain_event(stored, keys)
    return mapper.to_domain_event


@dataclass(frozen=True)
class Sealing:
    """What the composition root gives ``CustomerRecords`` to seal personal fields:
    the master key (32 bytes), which fields are personal, how long keys are cached."""

    master_key: bytes
    fields: PersonalFields
    cache_seconds: float = 5.0

    def keyring(self) -> Keyring:
        return Keyring(self.master_key, cache_seconds=self.cache_seconds)

    def mapper(self, base: Mapper[UUID]) -> SealingMapper:
        """A sealing mapper with ``base``'s transcoder, compressor and cipher."""
        return SealingMapper(
            base.transcoder,
            self.keyring(),
            self.fields,
            compressor=base.compressor,
            cipher=base.cipher,
        )
