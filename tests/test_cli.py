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


def test_autoets_without_statsforecast_names_the_extra(series_csv, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "statsforecast", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "statsforecast.models", None)
    result = runner.invoke(
        app,
        [
            *("backtest", str(series_csv), "--target", "value", "--horizon", "3"),
            *("--models", "ek,autoets", "--quiet"),
        ],
    )
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "pip install 'episodic-koopman[peers]'" in message
    assert "No module named" not in message


@pytest.mark.parametrize("command", ["backtest", "forecast"])
def test_param_parsing_is_shared_by_backtest_and_forecast(command, tmp_path, series_csv):
    """One parser: the same bad --param gets the same message from both commands."""
    from episodic_koopman.cli import backtest, batch
    from episodic_koopman.cli.params import parse_params

    assert backtest.parse_params is parse_params and batch.parse_params is parse_params
    args = {
        "backtest": [str(series_csv), "--target", "value", "--horizon", "3", "--quiet"],
        "forecast": [str(series_csv), "--horizon", "3", "--no-progress"],
    }[command]
    for bad in ("=3", "delays"):
        result = runner.invoke(app, [command, *args, "--param", bad])
        assert result.exit_code == 2, result.output
        assert f"--param takes KEY=VALUE, got {bad!r}" in " ".join(result.output.split())


def test_help_flags(tmp_path):
    """``-h`` is help everywhere (forecast's horizon is ``--horizon`` only)."""
    for args in (["-h"], ["forecast", "-h"], ["backtest", "-h"], ["replay", "-h"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        assert "Usage" in result.output
    assert "--horizon" in runner.invoke(app, ["forecast", "-h"]).output


def test_backtest_plot_uses_real_timestamps(tmp_path):
    import matplotlib.pyplot as plt

    from episodic_koopman.evaluation import backtest, model_factories
    from episodic_koopman.plotting import plot_backtest

    t = np.arange(400)
    values = 10 + np.sin(2 * np.pi * t / 24)
    stamps = np.datetime64("2024-01-01T00") + t.astype("timedelta64[h]")
    result = backtest(
        values,
        model_factories(["ek", "naive"], 24, {"delays": 12, "window": 96}),
        6,
        start=300,
        stride=10,
        season=24,
    )
    saved = {}
    original = plt.Figure.savefig

    def keep(fig, path, **kwargs):
        saved["top"] = fig.axes[0]
        original(fig, path, **kwargs)

    plt.Figure.savefig = keep
    try:
        plot_backtest(result, tmp_path / "p.png", timestamps=stamps, unit="kWh")
    finally:
        plt.Figure.savefig = original
    top = saved["top"]
    assert top.get_xlabel() == "time" and top.get_ylabel() == "kWh"
    low = top.get_xlim()[0]  # matplotlib date numbers: days since 1970
    assert np.datetime64("2024-01-01") <= np.datetime64(int(low), "D") < np.datetime64("2024-02-01")
    assert (tmp_path / "p.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="timestamps"):
        plot_backtest(result, tmp_path / "q.png", timestamps=stamps[:10])
