"""Progress off a terminal: whole lines, never carriage-return redraws (issue 22, item 6)."""

from __future__ import annotations

import io

from reelrec.progress import is_terminal, progress


class Clock:
    """A clock that advances one second per reading."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def test_a_log_file_gets_at_most_lines_whole_lines():
    out = io.StringIO()
    seen = list(progress(range(76), "encode", "batch", stream=out, clock=Clock()))
    assert seen == list(range(76))
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 10
    assert lines[-1] == "encode: 100% (76/76 batch), 10 s"  # the clock ticks once per line
    assert lines[0].startswith("encode: 10% (8/76 batch)")


def test_postfix_joins_the_next_line_and_lines_zero_is_silent():
    out = io.StringIO()
    bar = progress(range(4), "rq-vae", "epoch", lines=2, stream=out, clock=Clock())
    for i in bar:
        bar.set_postfix(recon=f"{i / 10:.2f}")
    assert out.getvalue().splitlines() == [
        "rq-vae: 50% (2/4 epoch), 1 s, recon 0.10",
        "rq-vae: 100% (4/4 epoch), 2 s, recon 0.30",
    ]
    quiet = io.StringIO()
    assert list(progress(iter(range(5)), "epoch 1", lines=0, stream=quiet)) == list(range(5))
    assert list(progress(range(5), "x", enabled=False, stream=quiet)) == list(range(5))
    assert quiet.getvalue() == ""


def test_fewer_steps_than_lines_and_unknown_length():
    out = io.StringIO()
    assert list(progress(range(3), "ocr", "item", stream=out, clock=Clock())) == [0, 1, 2]
    assert len(out.getvalue().splitlines()) == 3
    out = io.StringIO()
    assert list(progress((i for i in range(3)), "gen", stream=out)) == [0, 1, 2]
    assert out.getvalue() == ""  # no length, no total: nothing to measure against


def test_a_terminal_gets_tqdm():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    assert is_terminal(out) and not is_terminal(io.StringIO())
    assert list(progress(range(3), "bar", stream=out)) == [0, 1, 2]
    assert "\r" in out.getvalue()  # tqdm redraws in place on a terminal
