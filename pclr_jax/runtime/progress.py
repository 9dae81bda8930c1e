"""Progress reports that suit where they go: a bar on a terminal, plain lines in a log.

A tqdm bar redraws itself with carriage returns many times a second; written to a file (``bash
run.sh job > job.log``, a cluster's job log) that leaves hundreds of partial lines. A
:class:`Progress` therefore draws the bar only when its stream is a terminal, and otherwise prints
one plain line every ``every`` units and a last one when it closes::

    train: 120/360 step (33%) | 2.51 step/s | ETA 0:01:36 | loss=0.4102

``pclr train`` (every ``log_every_steps``), ``pclr embed``, ``pclr prepare`` and ``pclr probe``
report through it.
"""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

import tqdm

T = TypeVar("T")


def is_terminal(stream: IO[str]) -> bool:
    """Whether ``stream`` is an interactive terminal (``isatty``)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class Progress:
    """Counts units of work and reports them on ``stream`` (default: stderr).

    On a terminal: a tqdm bar. Elsewhere: a plain line each time the count crosses a multiple of
    ``every``, and at :meth:`close` if the last units were not reported yet; each line gives the
    count (of ``total`` when known), the rate since the previous line and the remaining time at
    that rate (with ``total``; once done or without it, the time elapsed), then the values of
    :meth:`set_postfix`.

    The methods ``update``, ``set_postfix`` and ``close`` are tqdm's, so a bar can be swapped for
    a :class:`Progress` without touching the code that drives it. Use it as a context manager.

    Args:
        desc: what is counted, e.g. ``'train'`` or ``'embedding'``.
        total: the count at the end, if known.
        unit: the unit's name (``'step'``, ``'ECG'``).
        every: units between two plain lines (at least 1).
        initial: the count at the start (a resumed run's step); not counted in the rate.
        stream: where to report (default ``sys.stderr`` at construction).
        enabled: ``False`` reports nothing (e.g. on processes other than 0).
    """

    def __init__(
        self,
        desc: str,
        *,
        total: int | None = None,
        unit: str = "it",
        every: int = 100,
        initial: int = 0,
        stream: IO[str] | None = None,
        enabled: bool = True,
    ):
        self.desc = desc
        self.total = total
        self.unit = unit
        self.every = max(1, int(every))
        self.count = initial
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._reported = initial
        self._postfix: dict[str, object] = {}
        self._start = self._line_time = time.perf_counter()
        self._bar = None
        if enabled and is_terminal(self.stream):
            self._bar = tqdm.tqdm(
                total=total, initial=initial, desc=desc, unit=unit, file=self.stream
            )

    def update(self, n: int = 1) -> None:
        """Adds ``n`` units."""
        if not self.enabled:
            return
        self.count += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.count // self.every > self._reported // self.every:
            self._write_line()

    def set_postfix(self, **values: object) -> None:
        """Values shown after the count (``loss='0.41'``), kept until replaced."""
        self._postfix.update(values)
        if self._bar is not None:
            self._bar.set_postfix(self._postfix, refresh=False)

    def write(self, message: str) -> None:
        """Prints ``message`` on its own line (above the bar on a terminal)."""
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        elif self.enabled:
            print(message, file=self.stream, flush=True)

    def line(self) -> str:
        """The plain line for the current count; the rate is that since the previous line (so
        the first includes start-up, e.g. compilation)."""
        now = time.perf_counter()
        elapsed = now - self._start
        interval = now - self._line_time
        rate = (self.count - self._reported) / interval if interval > 0 else 0.0
        parts = [f"{self.desc}: {self.count:,}"]
        if self.total:
            parts[0] += f"/{self.total:,} {self.unit} ({100 * self.count / self.total:.0f}%)"
        else:
            parts[0] += f" {self.unit}"
        parts.append(f"{rate:.3g} {self.unit}/s")
        if self.total and self.count < self.total and rate > 0:
            parts.append(f"ETA {_duration((self.total - self.count) / rate)}")
        else:
            parts.append(f"elapsed {_duration(elapsed)}")
        parts.extend(f"{k}={v}" for k, v in self._postfix.items())
        return " | ".join(parts)

    def _write_line(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self._reported = self.count
        self._line_time = time.perf_counter()

    def close(self) -> None:
        """Closes the bar, or writes the last line if units were not reported yet."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self.count != self._reported:
            self._write_line()
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(iterable: Iterable[T], desc: str, **options) -> Iterator[T]:
    """Yields the items of ``iterable``, counting each in a :class:`Progress` (``options`` are its
    keyword arguments), closed when the iteration ends or is abandoned."""
    with Progress(desc, **options) as progress:
        for item in iterable:
            yield item
            progress.update()
