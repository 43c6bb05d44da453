"""Progress: a bar on a terminal; on anything else a few log lines, no carriage returns."""

from __future__ import annotations

import io

import pytest

from infra.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_file_gets_no_bar_and_a_summary_line_at_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = io.StringIO()
    caplog.set_level("INFO", logger="peakend.progress")
    with progress(5000, "import x", unit="line", file=stream) as bar:
        for _ in range(5000):
            bar.update(1)
    assert stream.getvalue() == ""  # today: thousands of "\r" updates
    (line,) = caplog.messages  # the period (30 s) did not pass: the final line only
    assert line.startswith("import x done: 5000/5000 line (100%)")


def test_a_file_gets_a_line_per_period(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="peakend.progress")
    bar = progress(3, "replay", unit="event", file=io.StringIO(), every=0)
    bar.n = 2
    bar.refresh()  # the way replay and bench report positions
    bar.close()
    assert caplog.messages[0].startswith("replay progress: 2/3 event (67%)")
    assert caplog.messages[-1].startswith("replay done: 2/3")


def test_an_iterable_is_counted_when_there_is_no_terminal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="peakend.progress")
    stream = io.StringIO()
    with progress(4, "naive", unit="tp", iterable=range(4), file=stream) as bar:
        assert list(bar) == [0, 1, 2, 3]
    assert stream.getvalue() == ""
    assert caplog.messages[-1].startswith("naive done: 4/4 tp")


def test_a_terminal_gets_the_bar() -> None:
    stream = Terminal()
    with progress(10, "demo history", file=stream) as bar:
        bar.update(10)
    assert "\r" in stream.getvalue()
    assert "10/10" in stream.getvalue()


def test_quiet_means_neither_bar_nor_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="peakend.progress")
    stream = Terminal()
    with progress(10, "replay", quiet=True, file=stream, every=0) as bar:
        bar.update(10)
    assert stream.getvalue() == ""
    assert caplog.messages == []
