"""The embedded driver: one process, no Kafka.

HTTP ingest hands validated touchpoints to ``submit``; a recorder thread gathers what
arrives within ``linger`` (up to ``record_batch_size`` touchpoints) into ONE event-store
transaction and resolves each submitter's future only after the commit, so an answer of
202 means durable. A projector thread follows the event store's notification log and
is woken right after each commit, so projections trail ingest by one short batch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from domain.idempotency import Recorded
from domain.touchpoints import TouchpointIn
from infra.database import unavailable
from infra.metrics import Metrics
from projections.store import ReadModelStore
from streams.projector import FOLLOWER, follow, head
from streams.recorder import CustomerRecords

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """More touchpoints wait to be recorded than the queue holds: retry later."""


@dataclass
class _Submission:
    touchpoints: Sequence[TouchpointIn]
    future: Future[list[Recorded]] = field(default_factory=Future)


class EmbeddedDriver:
    def __init__(
        self,
        records: CustomerRecords,
        store: ReadModelStore,
        *,
        record_batch_size: int,
        record_linger_s: float,
        project_batch_size: int,
        project_poll_s: float,
        queue_limit: int = 20_000,
        metrics: Metrics | None = None,
    ) -> None:
        self.records = records
        self.store = store
        self.record_batch_size = record_batch_size
        self.record_linger_s = record_linger_s
        self.project_batch_size = project_batch_size
        self.project_poll_s = project_poll_s
        self.queue_limit = queue_limit
        self._queued = 0  # touchpoints submitted, not yet recorded or failed
        self._queued_lock = threading.Lock()
        self.metrics = metrics or Metrics()
        self._inbox: queue.Queue[_Submission] = queue.Queue()
        self._recorded = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.projector_error: str | None = None  # the last failure, until projecting recovers

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._record_loop, name="peakend-recorder", daemon=True),
            threading.Thread(target=self._project_loop, name="peakend-projector", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._recorded.set()
        for thread in self._threads:
            thread.join(timeout=10)

    # -- ingest ---------------------------------------------------------------------

    def submit(self, touchpoints: Sequence[TouchpointIn]) -> Future[list[Recorded]]:
        """Queue touchpoints for recording; the future resolves once they are durable."""
        if self._stopping.is_set():
            raise RuntimeError("the embedded driver is stopping")
        with self._queued_lock:
            if self._queued + len(touchpoints) > self.queue_limit:
                raise Overloaded(f"{self._queued} touchpoints are waiting to be recorded")
            self._queued += len(touchpoints)
        submission = _Submission(touchpoints)
        self._inbox.put(submission)
        return submission.future

    def _next_batch(self) -> list[_Submission]:
        try:
            batch = [self._inbox.get(timeout=0.2)]
        except queue.Empty:
            return []
        size = len(batch[0].touchpoints)
        deadline = time.monotonic() + self.record_linger_s
        while size < self.record_batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._inbox.get(timeout=remaining)
                    if remaining > 0
                    else (self._inbox.get_nowait())
                )
            except queue.Empty:
                break
            batch.append(item)
            size += len(item.touchpoints)
        return batch

    def _record_loop(self) -> None:
        while not (self._stopping.is_set() and self._inbox.empty()):
            batch = self._next_batch()
            if not batch:
                continue
            self._record(batch)
            self._recorded.set()

    def _record(self, batch: list[_Submission]) -> None:
        """Record submissions in one transaction; if that fails, record each alone, so a
        failure fails only the request that caused it, not its neighbours in the batch."""
        try:
            with self.metrics.record_batch_seconds.time():
                outcomes = self.records.record(
                    [tp for s in batch for tp in s.touchpoints],
                    units=[len(s.touchpoints) for s in batch],
                )
        except Exception as error:
            self.metrics.database_error("recorder", error)
            if unavailable(error):  # the database, not a request: fail fast, all of them
                log.warning(
                    "recording %d requests failed: the database is unavailable (%s)",
                    len(batch),
                    type(error).__name__,
                )
                for submission in batch:
                    self._settle(submission, error)
                return
            if len(batch) > 1:
                log.warning(
                    "a batch of %d requests failed (%s); recording them one by one",
                    len(batch),
                    error,
                )
                for submission in batch:
                    self._record([submission])
                return
            log.exception("recording a request of %d touchpoints failed", len(batch[0].touchpoints))
            self._settle(batch[0], error)
            return
        self.metrics.count_touchpoints(outcomes)
        start = 0
        for submission in batch:
            end = start + len(submission.touchpoints)
            self._settle(submission, outcomes[start:end])
            start = end

    def _settle(self, submission: _Submission, result: list[Recorded] | BaseException) -> None:
        with self._queued_lock:
            self._queued -= len(submission.touchpoints)
        if not submission.future.set_running_or_notify_cancel():
            return  # its caller gave up (cancelled): nobody waits for the answer
        if isinstance(result, BaseException):
            submission.future.set_exception(result)
        else:
            submission.future.set_result(result)

    # -- projection -----------------------------------------------------------------

    def _project_loop(self) -> None:
        while not self._stopping.is_set():
            self._recorded.wait(self.project_poll_s)
            self._recorded.clear()
            try:
                while self._project_batch():
                    self.projector_error = None
            except Exception as error:
                self.metrics.database_error("projector", error)
                # Health shows this: the kind of failure, never its text (hosts, SQL).
                self.projector_error = (
                    "the database is unavailable" if unavailable(error) else type(error).__name__
                )
                log.exception("projecting failed; retrying in 1 s")
                time.sleep(1)

    def _project_batch(self) -> int:
        """Project the next batch; return how many notifications it read. Only batches
        that read something are timed: an empty poll is not a batch."""
        started = time.perf_counter()
        read = follow(self.records, self.store, batch_size=self.project_batch_size).read
        if read:
            self.metrics.project_batch_seconds.observe(time.perf_counter() - started)
        return read

    def lag(self) -> int:
        """Notifications recorded but not yet projected."""
        return max(0, head(self.records) - self.store.position(FOLLOWER))

    def wait_until_projected(self, timeout: float = 10.0) -> bool:
        """Block until every recorded touchpoint is in the projections (tests, demo)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.lag() == 0:
                return True
            time.sleep(0.02)
        return False
