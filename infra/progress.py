"""Progress of long operations: a bar on a terminal, a few log lines elsewhere.

A tqdm bar redraws itself with carriage returns; written into a log file (a service,
``peakend bench > bench.log``) that is thousands of partial lines. So every bar in the
code base comes from ``progress``: drawn only when its stream is a terminal, and
otherwise replaced by one INFO line every ``every`` seconds and one when it ends.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")

log = logging.getLogger("peakend.progress")

LOG_EVERY_SECONDS = 30.0


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress(tqdm):  # type: ignore[type-arg]  # items are typed by progress()'s callers
    """A tqdm bar that, when disabled because its stream is no terminal, still counts
    and logs a summary line every ``every`` seconds (and at the end)."""

    def __init__(self, *args: Any, every: float, report: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A disabled tqdm keeps neither its description nor its unit.
        self._what, self._unit = kwargs.get("desc") or "progress", kwargs.get("unit", "it")
        self._every, self._report = every, report
        self._started = self._logged = time.monotonic()
        self._ended = False

    def update(self, n: float | None = 1) -> bool | None:
        if not self.disable:
            return super().update(n)
        self.n += n or 0
        self._tick()
        return None

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        if not self.disable:
            super().refresh(*args, **kwargs)
            return
        self._tick()

    def __iter__(self) -> Iterator[Any]:
        if not self.disable:
            yield from super().__iter__()
            return
        for item in self.iterable:
            yield item
            self.n += 1
            self._tick()
        self.close()  # as tqdm does at the end of an iteration: the summary line

    def close(self) -> None:
        if self.disable and self._report and not self._ended:
            self._ended = True
            self._log("done")
        super().close()

    def _tick(self) -> None:
        now = time.monotonic()
        if self._report and now - self._logged >= self._every:
            self._logged = now
            self._log("progress")

    def _log(self, stage: str) -> None:
        elapsed = time.monotonic() - self._started
        rate = self.n / elapsed if elapsed > 0 else 0.0
        of = f"/{self.total:g}" if self.total else ""
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        log.info(
            "%s %s: %g%s %s%s in %.0f s, %.0f %s/s",
            self._what,
            stage,
            self.n,
            of,
            self._unit,
            share,
            elapsed,
            rate,
            self._unit,
        )


def progress(
    total: float | None = None,
    desc: str = "",
    *,
    unit: str = "it",
    iterable: Iterable[T] | None = None,
    leave: bool = True,
    quiet: bool = False,
    every: float = LOG_EVERY_SECONDS,
    file: TextIO | None = None,
) -> Progress:
    """A progress bar on ``file`` (stderr) if it is a terminal; else summary log lines
    every ``every`` seconds. ``quiet``: neither."""
    stream = file or sys.stderr
    return Progress(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        leave=leave,
        file=stream,
        disable=quiet or not is_terminal(stream),
        every=every,
        report=not quiet,
    )
