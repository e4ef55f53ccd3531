"""``signals_held`` for a Python API caller (no CLI handler installed): a signal
inside a held step is delivered after it, dropped, or kept from undoing a commit.

The signal is raised for real (``signal.raise_signal``) in this process, with
Python's own SIGINT handler in place, as in a program that uses snapmgr.
"""

from __future__ import annotations

import signal

import pytest

from snapmgr.signals import commit_passed, signals_held


@pytest.fixture(autouse=True)
def python_default_sigint() -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_held_signal_is_delivered_when_the_step_ends() -> None:
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with signals_held(deliver_after=True):
            signal.raise_signal(signal.SIGINT)
            steps.append("the step ran to its end")
        steps.append("not reached")
    assert steps == ["the step ran to its end"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_held_signal_is_dropped_by_a_cleanup_step() -> None:
    with signals_held():
        signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_signal_held_across_a_commit_point_is_not_delivered() -> None:
    with signals_held(deliver_after=True):
        signal.raise_signal(signal.SIGINT)
        commit_passed("the test's step was committed")


def test_a_failing_step_reports_its_own_error() -> None:
    with pytest.raises(ValueError, match="the step's own"), signals_held(deliver_after=True):
        signal.raise_signal(signal.SIGINT)
        raise ValueError("the step's own error")
