"""Progress for long work: a tqdm bar on a terminal, a few plain lines anywhere else.

A bar redraws itself with carriage returns; in a log file or a pipe those redraws pile up
(one per refresh). So when the stream is not a terminal, :func:`progress` writes at most
``lines`` whole lines (``desc: 40% (30/76 batch), 12 s``), or nothing when the caller logs its
own line per step (``lines=0``: the training loop and the alignment log one line per epoch).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

T = TypeVar("T")


def is_terminal(stream: IO[str] | None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``) is an interactive terminal."""
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or a stream without isatty
        return False


class _Lines:
    """The non-terminal stand-in of a tqdm bar: iterates and writes up to ``lines`` lines at
    even fractions of ``total``. ``set_postfix`` values join the next line."""

    def __init__(
        self,
        iterable: Iterable[T],
        desc: str,
        unit: str,
        total: int | None,
        lines: int,
        stream: IO[str],
        clock: Callable[[], float],
    ) -> None:
        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.total = total if total is not None else _length(iterable)
        self.lines, self.stream, self.clock = lines, stream, clock
        self.postfix: dict[str, Any] = {}

    def set_postfix(self, **values: Any) -> None:
        """Remember values to print with the next line (tqdm's ``set_postfix``)."""
        self.postfix = values

    def __iter__(self) -> Iterator[T]:
        total, start = self.total, self.clock()
        if self.lines <= 0 or not total:
            yield from self.iterable
            return
        marks = {math.ceil(total * j / self.lines) for j in range(1, self.lines + 1)}
        for i, x in enumerate(self.iterable, start=1):
            yield x
            if i in marks:
                extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
                self.stream.write(
                    f"{self.desc}: {100 * i // total}% ({i}/{total} {self.unit}), "
                    f"{self.clock() - start:.0f} s{extra}\n"
                )
                self.stream.flush()


def _length(iterable: Iterable[Any]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def progress(
    iterable: Iterable[T],
    desc: str,
    unit: str = "it",
    total: int | None = None,
    enabled: bool = True,
    lines: int = 10,
    stream: IO[str] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    **tqdm_options: Any,
) -> Any:
    """Wrap ``iterable`` in a progress display; returns something to iterate with
    ``set_postfix``.

    Args:
        iterable: what to iterate. desc: label. unit: what one step is. total: steps (default
            ``len(iterable)``; without a length no lines are written off a terminal).
        enabled: False shows nothing. lines: how many lines to write when ``stream`` is not a
            terminal (0: none; the caller logs its own). stream: where (default stderr).
        clock: seconds since an arbitrary start (injected by tests).
        tqdm_options: passed to tqdm on a terminal (``leave``, ``mininterval``...).
    """
    out = stream if stream is not None else sys.stderr
    if enabled and is_terminal(out):
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, unit=unit, total=total, file=out, **tqdm_options)
    return _Lines(iterable, desc, unit, total, lines if enabled else 0, out, clock)
