"""Spacing inference, future timestamps and the --missing policies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from episodic_koopman.batch import (
    SeriesData,
    SeriesError,
    future_timestamps,
    infer_step,
    prepare_series,
)


def series(ds, y=None, uid="a") -> SeriesData:
    ds = np.asarray(ds)
    if np.issubdtype(ds.dtype, np.datetime64):
        ds = ds.astype("datetime64[ns]").astype(np.int64)
    y = np.arange(len(ds), dtype=np.float64) if y is None else np.asarray(y, dtype=np.float64)
    return SeriesData(uid, 0, ds, y, np.arange(1, len(ds) + 1))


def stamps(values) -> list[pd.Timestamp]:
    return [pd.Timestamp(int(v)) for v in values]


@pytest.mark.parametrize(
    ("freq", "expected"),
    [
        ("h", ["2024-01-05 04:00", "2024-01-05 05:00"]),
        ("15min", ["2024-01-02 01:00", "2024-01-02 01:15"]),
        ("D", ["2024-04-10", "2024-04-11"]),
        ("W-SUN", ["2025-12-07", "2025-12-14"]),
        ("MS", ["2032-05-01", "2032-06-01"]),
        ("ME", ["2032-05-31", "2032-06-30"]),
        ("QS", ["2049-01-01", "2049-04-01"]),
        ("YS", ["2124-01-01", "2125-01-01"]),
    ],
)
def test_future_timestamps_follow_the_spacing(freq, expected):
    index = pd.date_range("2024-01-01", periods=100, freq=freq)
    s = series(index.to_numpy())
    prepared = prepare_series(s, "datetime")
    assert stamps(future_timestamps(prepared, 2, "datetime")) == pd.to_datetime(expected).tolist()


def test_monthly_series_with_a_gap_is_filled_on_the_calendar():
    index = pd.date_range("2020-01-01", periods=30, freq="MS").delete(7)
    prepared = prepare_series(series(index.to_numpy()), "datetime", "interpolate")
    assert prepared.step.freq == "MS"
    assert prepared.values.size == 30 and prepared.n_filled == 1
    assert prepared.values[7] == pytest.approx(6.5)


def test_duplicated_timestamp_names_series_and_rows():
    s = series(np.array([0, 1, 2, 2, 3]), uid="store-9")
    with pytest.raises(
        SeriesError, match=r"series 'store-9', row 4: duplicated timestamp 2 .*row 3"
    ):
        infer_step(s, "numeric")


def test_irregular_timestamp_names_series_and_row():
    ds = pd.to_datetime(
        ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04 06:00"], format="ISO8601"
    )
    with pytest.raises(SeriesError, match=r"series 'a', row 4: irregular timestamp 2024-01-04T06"):
        infer_step(series(ds.to_numpy()), "datetime")


def test_gaps_fail_under_the_error_policy_and_are_counted():
    s = series(np.array([0, 1, 2, 5, 6, 7]))
    with pytest.raises(SeriesError, match=r"after row 3: 2 missing timestamp\(s\).*--missing"):
        prepare_series(s, "numeric", "error")


@pytest.mark.parametrize(
    ("policy", "values"),
    [
        ("ffill", [0, 1, 2, 2, 2, 3, 4]),
        ("interpolate", [0, 1, 2, 2 + 1 / 3, 2 + 2 / 3, 3, 4]),
        ("zero", [0, 1, 2, 0, 0, 3, 4]),
        ("drop", [0, 1, 2, 3, 4]),
        ("skip", [0, 1, 2, 3, 4]),  # the library's older name for drop
    ],
)
def test_missing_policies_on_gaps(policy, values):
    s = series(np.array([0, 1, 2, 5, 6]) * 10, y=[0, 1, 2, 3, 4])
    prepared = prepare_series(s, "numeric", policy)
    np.testing.assert_allclose(prepared.values, values, rtol=0, atol=1e-12)
    # forecasts continue from the last timestamp whatever the policy
    assert future_timestamps(prepared, 2, "numeric").tolist() == [70, 80]


def test_empty_targets_follow_the_policy_and_leading_ones_are_dropped():
    s = series(np.arange(6), y=[np.nan, 1.0, np.nan, 3.0, 4.0, np.nan])
    with pytest.raises(SeriesError, match=r"row 3: the target is empty"):
        prepare_series(s, "numeric", "error")
    assert prepare_series(s, "numeric", "ffill").values.tolist() == [1, 1, 3, 4, 4]
    assert prepare_series(s, "numeric", "interpolate").values.tolist() == [1, 2, 3, 4, 4]
    assert prepare_series(s, "numeric", "drop").values.tolist() == [1, 3, 4]


def test_daily_series_across_a_dst_change_is_regular_on_the_wall_clock():
    index = pd.date_range("2024-03-20", periods=20, freq="D", tz="Europe/Paris")
    utc = index.tz_convert("UTC").tz_localize(None).to_numpy()
    s = series(utc)
    s.tz = "Europe/Paris"
    prepared = prepare_series(s, "datetime")
    future = pd.DatetimeIndex(future_timestamps(prepared, 2, "datetime").astype("datetime64[ns]"))
    local = future.tz_localize("UTC").tz_convert("Europe/Paris")
    assert [str(t) for t in local] == ["2024-04-09 00:00:00+02:00", "2024-04-10 00:00:00+02:00"]
