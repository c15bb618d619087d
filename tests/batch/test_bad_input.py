"""Bad input: a clear message, never a traceback, and a non-zero exit when a series failed."""

from __future__ import annotations

import pandas as pd
import pytest

from .conftest import SMALL_ARGS, long_frame


def run(cli, path, *extra):
    result = cli("forecast", path, "--horizon", 3, "--no-progress", *SMALL_ARGS, *extra)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ("", "empty.csv", "is empty"),
        ("unique_id,ds,y\n", "header.csv", "has a header but no rows"),
        ("a,b\n1,2\n", "other.csv", "column 'ds' not found (rename it with --time)"),
        ("unique_id,ds,y\n", "data.xlsx", "unknown file type '.xlsx'"),
        ("unique_id,ds,y\n", "data", "unknown file type '(no extension)'"),
        ("not parquet", "broken.parquet", "cannot read it as parquet"),
    ],
)
def test_unusable_files_exit_2_with_a_message(cli, write, content, name, message):
    result = run(cli, write(content, name))
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_missing_file(cli, tmp_path):
    result = run(cli, tmp_path / "nope.csv")
    assert result.exit_code == 2 and "no such file" in result.stderr


def test_explicit_id_column_must_exist(cli, write):
    result = run(cli, write(long_frame(2)), "--id", "store")
    assert result.exit_code == 2
    assert "column 'store' not found (rename it with --id)" in result.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["-p", "delays=0"], "invalid model parameters: delays must be >= 1"),
        (["-p", "nonsense"], "--param takes KEY=VALUE"),
        (["--missing", "guess"], "missing must be one of"),
        (["--memory-scope", "global"], "memory scope must be one of"),
        (["--engine", "spark"], "--engine must be local or dask"),
        (["--level", "1.5"], "level must lie strictly between 0 and 1"),
        (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler needs --engine dask"),
        (["--partitions", "2"], "need --memory-scope shared"),
    ],
)
def test_bad_options_exit_2(cli, write, options, message):
    result = run(cli, write(long_frame(2)), *options)
    assert result.exit_code == 2
    assert message in result.stderr


def test_non_numeric_target_everywhere_exits_1(cli, write):
    frame = long_frame(2).astype({"y": str})
    frame["y"] = "n/a-" + frame["y"]
    result = run(cli, write(frame))
    assert result.exit_code == 1
    assert "series 's0', row 1: target 'y' is 'n/a-" in result.stderr
    assert "no series could be forecast" in result.stderr


def test_bad_series_are_skipped_and_reported_the_others_forecast(cli, write, tmp_path):
    frame = long_frame(4).astype({"y": object})
    frame.loc[130, "y"] = "twelve"  # s1: non-numeric
    frame = frame.drop(index=250)  # s2: a gap
    short = pd.DataFrame({"unique_id": "tiny", "ds": frame["ds"].iloc[:5], "y": 1.0})
    dup = frame[frame["unique_id"] == "s3"].iloc[[10]]
    frame = pd.concat([frame, short, dup])  # s3: a duplicated timestamp
    out = tmp_path / "out.csv"
    result = run(cli, write(frame), "-o", out)
    assert result.exit_code == 1  # the good series are still written
    assert pd.read_csv(out)["unique_id"].unique().tolist() == ["s0"]
    assert "some series failed" in result.stderr and "--allow-failures" in result.stderr
    out.unlink()
    allowed = run(cli, write(frame), "-o", out, "--allow-failures")
    assert allowed.exit_code == 0
    assert pd.read_csv(out)["unique_id"].unique().tolist() == ["s0"]
    err = " ".join(result.stderr.split())  # the console wraps long lines
    assert "series 's1', row 131: target 'y' is 'twelve', not a number" in err
    assert "series 's2', after row 250: 1 missing timestamp(s)" in err
    assert "series 's3', row 485: duplicated timestamp 2024-01-11 (also at row 370)" in err
    assert "series 'tiny': too short, 5 observations; the model needs at least 24" in err
    assert "series failed" in err


def test_a_gap_is_forecast_with_a_missing_policy(cli, write, tmp_path):
    frame = long_frame(2).drop(index=[50, 51])
    out = tmp_path / "out.csv"
    assert run(cli, write(frame), "-o", out).exit_code == 1  # s1 forecast, s0 failed
    assert pd.read_csv(out)["unique_id"].unique().tolist() == ["s1"]
    assert run(cli, write(frame), "-o", out, "--missing", "interpolate").exit_code == 0
    assert pd.read_csv(out)["unique_id"].unique().tolist() == ["s0", "s1"]


def test_every_series_failed_exits_1_even_with_allow_failures(cli, write):
    frame = long_frame(2).drop(index=[50, 51, 170])
    result = run(cli, write(frame), "--allow-failures")
    assert result.exit_code == 1
    assert "no series could be forecast" in result.stderr


def test_gap_message_names_the_spacing_in_words(cli, write):
    frame = long_frame(1, freq="h").drop(index=[50])
    result = run(cli, write(frame))
    err = " ".join(result.stderr.split())
    assert "missing timestamp(s) on its regular spacing of 1 hour " in err, err


def test_unparseable_timestamp_names_the_row(cli, write):
    frame = long_frame(1).astype({"ds": str})
    frame.loc[7, "ds"] = "yesterday"
    result = run(cli, write(frame))
    assert result.exit_code == 1
    assert "series 's0', row 8: timestamp is 'yesterday', not a timestamp" in result.stderr


def test_rows_without_id_are_reported(cli, write, tmp_path):
    frame = long_frame(2)
    frame.loc[3, "unique_id"] = None
    result = run(cli, write(frame), "--missing", "interpolate")
    assert result.exit_code == 0
    assert "1 rows have an empty 'unique_id' (first: row 4)" in " ".join(result.stderr.split())
