"""The history ring: every read equals a plain list of the observations, whatever its margin."""

import numpy as np
import pytest

from episodic_koopman.embedding import History


@pytest.mark.parametrize("margin", [1, 3, 17, None])
def test_reads_equal_a_plain_record_of_the_observations(margin):
    rng = np.random.default_rng(0)
    length, seen = 20, []
    history = History(length, 2, margin)
    for _ in range(130):
        row = rng.standard_normal(2)
        history.append(row)
        seen.append(row)
        held = min(len(seen), length)
        for k in (1, max(1, held // 2), held):
            np.testing.assert_array_equal(history.last(k), np.array(seen[len(seen) - k :]))
        idx = rng.integers(len(seen) - held, len(seen), size=5)
        np.testing.assert_array_equal(history.rows(idx), np.array(seen)[idx])
    with pytest.raises(IndexError):
        history.rows(np.array([len(seen) - length - 1]))


def test_state_is_the_rows_held_whatever_the_margin():
    rng = np.random.default_rng(1)
    values = rng.standard_normal((75, 1))
    states = []
    for margin in (1, 6, 40):
        history = History(30, 1, margin)
        for row in values:
            history.append(row)
        states.append(history.get_state())
        restored = History(30, 1, margin)
        restored.set_state(history.get_state())
        restored.append(np.array([9.0]))
        history.append(np.array([9.0]))
        np.testing.assert_array_equal(restored.last(30), history.last(30))
    for state in states[1:]:
        np.testing.assert_array_equal(state["rows"], states[0]["rows"])
    np.testing.assert_array_equal(states[0]["rows"], values[-30:])


@pytest.mark.parametrize("margin", [1, 5, None])
def test_windows_equal_the_gathered_rows(margin):
    rng = np.random.default_rng(2)
    length, width = 40, 6
    history = History(length, 2, margin)
    for _ in range(97):
        history.append(rng.standard_normal(2))
    oldest = history.count - length + width - 1  # the first end whose window is held
    for ends in (
        np.arange(oldest, history.count),  # consecutive: the strided copy
        np.arange(oldest + 3, oldest + 4),  # one
        np.array([oldest, oldest + 2, oldest + 3]),  # a gap: the gather
    ):
        windows = history.windows(ends, width)
        expected = history.rows(ends[:, None] + np.arange(1 - width, 1))
        assert windows.flags.c_contiguous and windows.shape == (ends.size, width, 2)
        np.testing.assert_array_equal(windows, expected)
    with pytest.raises(IndexError):
        history.windows(np.arange(oldest - 1, oldest + 5), width)
    with pytest.raises(IndexError):
        history.windows(np.arange(history.count - 3, history.count + 1), width)
