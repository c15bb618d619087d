"""Reading long-format files and writing forecasts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from episodic_koopman.batch import BatchConfig, forecast_panel, panel_from_frame, read_long

from .conftest import SMALL, SMALL_ARGS, long_frame

OUTPUT_COLUMNS = ["unique_id", "ds", "step", "mean", "lower", "upper"]


def test_csv_and_parquet_give_the_same_panel(frame, write):
    from_csv = read_long(write(frame, "in.csv"))
    from_parquet = read_long(write(frame, "in.parquet"))
    assert [s.uid for s in from_csv.series] == ["s0", "s1", "s2", "s3"]
    assert from_csv.time_kind == from_parquet.time_kind == "datetime"
    for a, b in zip(from_csv.series, from_parquet.series, strict=True):
        assert a.uid == b.uid
        np.testing.assert_array_equal(a.ds, b.ds)
        np.testing.assert_array_equal(a.y, b.y)  # CSV round-trips float64 exactly
        np.testing.assert_array_equal(a.rows, b.rows)


def test_rows_are_numbered_from_one_in_file_order(frame):
    panel = panel_from_frame(frame.sample(frac=1.0, random_state=0))
    shuffled_rows = np.concatenate([s.rows for s in panel.series])
    assert sorted(shuffled_rows.tolist()) == list(range(1, len(frame) + 1))


def test_forecast_rows_for_every_series(frame, write, cli, tmp_path):
    out = tmp_path / "out.csv"
    result = cli("forecast", write(frame), "--horizon", 5, "-o", out, *SMALL_ARGS)
    assert result.exit_code == 0, result.stderr
    forecasts = pd.read_csv(out, parse_dates=["ds"])
    assert list(forecasts.columns) == OUTPUT_COLUMNS
    assert forecasts["unique_id"].tolist() == [f"s{i}" for i in range(4) for _ in range(5)]
    assert forecasts["step"].tolist() == list(range(1, 6)) * 4
    last = frame["ds"].max()
    expected = pd.date_range(last, periods=6, freq="D")[1:].tolist() * 4
    assert forecasts["ds"].tolist() == expected
    assert np.all(forecasts["lower"] <= forecasts["mean"])
    assert np.all(forecasts["mean"] <= forecasts["upper"])
    assert "series forecast" in result.stderr and "throughput" in result.stderr


def test_stdout_output_is_csv_and_keeps_stderr_for_the_summary(frame, write, cli):
    result = cli("forecast", write(frame), "--horizon", 2, "--no-progress", *SMALL_ARGS)
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert lines[0] == ",".join(OUTPUT_COLUMNS)
    assert len(lines) == 1 + 4 * 2
    assert "forecast summary" in result.stderr and "forecast summary" not in result.stdout


def test_parquet_output_matches_the_library(frame, write, cli, tmp_path):
    out = tmp_path / "out.parquet"
    result = cli("forecast", write(frame, "in.parquet"), "--horizon", 3, "-o", out, *SMALL_ARGS)
    assert result.exit_code == 0
    direct = forecast_panel(panel_from_frame(frame), BatchConfig(3, params=SMALL)).frame()
    pd.testing.assert_frame_equal(pd.read_parquet(out), direct)


def test_a_file_without_id_column_is_one_series(write, cli, tmp_path):
    frame = long_frame(1).drop(columns="unique_id")
    out = tmp_path / "out.csv"
    result = cli("forecast", write(frame, "sales.csv"), "--horizon", 2, "-o", out, *SMALL_ARGS)
    assert result.exit_code == 0, result.stderr
    forecasts = pd.read_csv(out)
    assert forecasts["unique_id"].tolist() == ["sales", "sales"]


def test_renamed_columns(frame, write, cli, tmp_path):
    renamed = frame.rename(columns={"unique_id": "store", "ds": "date", "y": "sales"})
    path = write(renamed)
    out = tmp_path / "out.csv"
    args = ["--id", "store", "--time", "date", "--target", "sales", "-o", out]
    result = cli("forecast", path, "--horizon", 2, *args, *SMALL_ARGS)
    assert result.exit_code == 0, result.stderr
    assert pd.read_csv(out)["unique_id"].nunique() == 4


def test_ids_are_kept_as_written(write, cli, tmp_path):
    frame = long_frame(2)
    frame["unique_id"] = frame["unique_id"].map({"s0": "007", "s1": "010"})
    out = tmp_path / "out.csv"
    assert cli("forecast", write(frame), "--horizon", 1, "-o", out, *SMALL_ARGS).exit_code == 0
    assert pd.read_csv(out, dtype={"unique_id": str})["unique_id"].tolist() == ["007", "010"]


def test_unsorted_rows_are_sorted_per_series(frame):
    cfg = BatchConfig(3, params=SMALL)
    ordered = forecast_panel(panel_from_frame(frame), cfg).frame()
    shuffled = forecast_panel(panel_from_frame(frame.sample(frac=1.0, random_state=1)), cfg)
    out = shuffled.frame().sort_values(["unique_id", "step"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(out, ordered)


def test_timezone_aware_timestamps_keep_their_zone(frame):
    frame = frame.assign(ds=frame["ds"].dt.tz_localize("Europe/Paris"))
    out = forecast_panel(panel_from_frame(frame), BatchConfig(2, params=SMALL)).frame()
    assert str(out["ds"].dt.tz) == "Europe/Paris"
    assert out["ds"].iloc[0] == frame["ds"].max() + pd.Timedelta(days=1)


@pytest.mark.parametrize("ds", [np.arange(120) * 3, np.arange(120) * 0.5 + 10.0])
def test_numeric_time_index(ds):
    frame = pd.DataFrame({"ds": ds, "y": np.sin(np.arange(120) / 3.0)})
    out = forecast_panel(panel_from_frame(frame), BatchConfig(3, params=SMALL)).frame()
    step = ds[1] - ds[0]
    np.testing.assert_allclose(out["ds"], ds[-1] + step * np.arange(1, 4), rtol=0, atol=1e-12)
