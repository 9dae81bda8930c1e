"""Progress reports: plain lines when the output is not a terminal, a bar when it is."""

import io

from pclr_jax.runtime.progress import Progress, track


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_every_n_units_when_not_a_terminal():
    stream = io.StringIO()
    with Progress("train", total=10, unit="step", every=3, stream=stream) as progress:
        for step in range(10):
            progress.set_postfix(loss=f"{1 / (step + 1):.2f}")
            progress.update()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [line.split(" | ")[0] for line in lines] == [
        "train: 3/10 step (30%)",
        "train: 6/10 step (60%)",
        "train: 9/10 step (90%)",
        "train: 10/10 step (100%)",  # the last units, at close
    ]
    assert lines[0].endswith("loss=0.33") and " step/s | ETA " in lines[0]
    assert " elapsed " in lines[-1] and lines[-1].endswith("loss=0.10")


def test_resumed_count_and_unknown_total():
    stream = io.StringIO()
    with Progress("train", total=20, initial=12, every=5, unit="step", stream=stream) as progress:
        for _ in range(8):
            progress.update()
    assert [line.split(" | ")[0] for line in stream.getvalue().splitlines()] == [
        "train: 15/20 step (75%)",
        "train: 20/20 step (100%)",
    ]
    stream = io.StringIO()
    assert list(track(range(5), "embedding", unit="ECG", every=2, stream=stream)) == [0, 1, 2, 3, 4]
    assert [line.split(" | ")[0] for line in stream.getvalue().splitlines()] == [
        "embedding: 2 ECG",
        "embedding: 4 ECG",
        "embedding: 5 ECG",
    ]
    silent = io.StringIO()
    with Progress("train", every=1, stream=silent, enabled=False) as progress:
        progress.update(3)
        progress.write("not shown")
    assert silent.getvalue() == ""


def test_a_bar_on_a_terminal():
    stream = Terminal()
    with Progress("train", total=4, every=1, unit="step", stream=stream) as progress:
        for _ in range(4):
            progress.update()
        progress.write("a message")
    text = stream.getvalue()
    assert "\r" in text and "4/4" in text and "a message" in text
    assert "train: 1/4 step (25%)" not in text
