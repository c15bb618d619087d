"""The command line: contracts, JSON schema and user errors (never a traceback)."""

import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from episodic_koopman.cli import app

runner = CliRunner()
AUTOARIMA = ("--models", "naive,autoarima")


@pytest.fixture
def series_csv(tmp_path):
    t = np.arange(600)
    y = 10 + np.sin(2 * np.pi * t / 24) + 0.05 * np.random.default_rng(0).standard_normal(600)
    path = tmp_path / "series.csv"
    rows = [f"{k},{v}" for k, v in zip(t, y, strict=True)]
    path.write_text("time,value\n" + "\n".join(rows) + "\n")
    return path


def test_backtest_writes_the_contracted_json_and_a_plot(series_csv, tmp_path):
    out, png = tmp_path / "out.json", tmp_path / "out.png"
    result = runner.invoke(
        app,
        [
            "backtest",
            str(series_csv),
            "--target",
            "value",
            "--time",
            "time",
            "--horizon",
            "6",
            "--season",
            "24",
            "--models",
            "ek,ek-nomem,snaive,naive",
            "--stride",
            "5",
            "--json",
            str(out),
            "--plot",
            str(png),
            "--quiet",
            "--param",
            "delays=12",
            "--param",
            "window=96",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["horizon"] == 6
    assert set(doc["models"]) == {"ek", "ek-nomem", "snaive", "naive"}
    assert doc["interval_levels"] == [0.5, 0.8, 0.95]
    for row in doc["models"].values():
        assert set(row) >= {"mae", "rmse", "mase", "mae_by_h", "coverage", "seconds"}
        assert set(row) >= {"wis", "coverage_50", "coverage_80", "coverage_95", "fallbacks"}
        assert len(row["mae_by_h"]) == 6
    assert doc["models"]["snaive"]["coverage"] is None
    assert doc["models"]["snaive"]["wis"] is None and doc["models"]["snaive"]["fallbacks"] is None
    for name in ("ek", "ek-nomem"):
        row = doc["models"][name]
        assert row["wis"] > 0 and row["fallbacks"] == 0
        assert 0 <= row["coverage_50"] <= row["coverage_80"] <= row["coverage_95"] <= 1
    assert png.stat().st_size > 10_000
    assert "ek-nomem" in result.output


def test_backtest_on_a_builtin_dataset():
    result = runner.invoke(
        app,
        [
            "backtest",
            "--dataset",
            "airline",
            "--horizon",
            "3",
            "--models",
            "naive,snaive",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "airline" in result.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["--target", "nope"], "no column 'nope'"),
        (["--target", "value", "--models", "ek,magic"], "unknown peer 'magic'"),
        (["--target", "value", "--start", "590"], "no forecast origins"),
        ([], "--target is required"),
    ],
)
def test_backtest_user_errors_are_clear_without_traceback(series_csv, args, message):
    result = runner.invoke(app, ["backtest", str(series_csv), "--horizon", "12", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_backtest_names_the_extra_when_statsforecast_is_missing(series_csv, monkeypatch):
    monkeypatch.setitem(sys.modules, "statsforecast", None)  # import fails as if absent
    result = runner.invoke(
        app,
        ["backtest", str(series_csv), "--target", "value", "--horizon", "3", *AUTOARIMA],
    )
    assert result.exit_code == 2
    output = " ".join(result.output.split())  # the console wraps long lines
    assert "pip install 'episodic-koopman[peers]'" in output
    assert "No module named" not in output and "Traceback" not in output


def test_backtest_multichannel_csv_scores_the_target(tmp_path):
    t = np.arange(400)
    a, b = np.sin(2 * np.pi * t / 24), np.cos(2 * np.pi * t / 24) + 5
    path = tmp_path / "two.csv"
    path.write_text("a,b\n" + "\n".join(f"{x},{y}" for x, y in zip(a, b, strict=True)) + "\n")
    out = tmp_path / "two.json"
    result = runner.invoke(
        app,
        [
            *("backtest", str(path), "--target", "b", "--channels", "a", "--horizon", "4"),
            *("--models", "ek,naive", "--stride", "10", "--quiet", "--json", str(out)),
            *("--param", "delays=12", "--param", "window=96"),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["channels"] == ["a", "b"] and doc["target"] == "b"
    naive = doc["models"]["naive"]
    assert naive["mae"] == pytest.approx(naive["mae_by_channel"]["b"])
    assert set(doc["models"]["ek"]["mae_by_channel"]) == {"a", "b"}


def test_backtest_rejects_non_numeric_rows_and_unordered_time(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("t,y\n1,1.0\n2,oops\n")
    result = runner.invoke(app, ["backtest", str(bad), "--target", "y", "--horizon", "1"])
    assert result.exit_code == 2 and "line 3" in result.output and "'oops'" in result.output
    unordered = tmp_path / "unordered.csv"
    unordered.write_text("t,y\n1,1.0\n3,2.0\n2,3.0\n")
    result = runner.invoke(
        app, ["backtest", str(unordered), "--target", "y", "--time", "t", "--horizon", "1"]
    )
    assert result.exit_code == 2 and "not after the previous row" in result.output
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    result = runner.invoke(app, ["backtest", str(empty), "--target", "y", "--horizon", "1"])
    assert result.exit_code == 2 and "empty" in result.output


def test_data_fetch_copies_from_a_folder(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "ilinet_national.csv").write_text("x\n")
    result = runner.invoke(app, ["data", "fetch", "--from", str(src), "--to", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "ilinet_national.csv").exists()
    result = runner.invoke(app, ["data", "fetch", "--from", str(tmp_path / "none")])
    assert result.exit_code == 2 and "no data files" in result.output


def test_demo_runs():
    result = runner.invoke(app, ["demo", "--steps", "400", "--every", "200"])
    assert result.exit_code == 0, result.output
    assert "MAE over" in result.output
