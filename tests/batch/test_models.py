"""--save-models writes loadable models; inspect prints and plots them."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd

from episodic_koopman import EpisodicKoopman
from episodic_koopman.batch import exact_floats, model_filename

from .conftest import SMALL_ARGS, long_frame


def test_saved_models_reproduce_the_forecasts(cli, write, tmp_path):
    frame = long_frame(3, 150)
    frame["unique_id"] = frame["unique_id"].map({"s0": "a/b", "s1": "plain", "s2": ".hidden"})
    models, out = tmp_path / "models", tmp_path / "out.csv"
    result = cli(
        "forecast", write(frame), "--horizon", 4, "-o", out, "--save-models", models, *SMALL_ARGS
    )
    assert result.exit_code == 0, result.stderr
    with open(models / "models.csv") as fh:
        index = {row["unique_id"]: row["file"] for row in csv.DictReader(fh)}
    assert index == {uid: model_filename(uid) for uid in ("a/b", "plain", ".hidden")}
    assert index["plain"] == "plain.ekm" and "/" not in index["a/b"]
    assert not index[".hidden"].startswith(".")
    forecasts = pd.read_csv(out, **exact_floats())  # the CSV holds exact floats
    for uid, name in index.items():
        model = EpisodicKoopman.load(models / name)
        assert model.n_observations == 150
        f = model.predict(4, level=0.9)
        rows = forecasts[forecasts["unique_id"] == uid]
        np.testing.assert_array_equal(rows["mean"].to_numpy(), f.mean)
        np.testing.assert_array_equal(rows["lower"].to_numpy(), f.lower)


def test_inspect_prints_spectrum_and_memory_and_plots(cli, write, tmp_path):
    models = tmp_path / "models"
    frame = long_frame(1, 300)
    result = cli("forecast", write(frame), "--horizon", 2, "--save-models", models, *SMALL_ARGS)
    assert result.exit_code == 0
    plot = tmp_path / "model.png"
    shown = cli("inspect", models / "s0.ekm", "--plot", plot)
    assert shown.exit_code == 0, shown.output
    text = shown.stdout
    assert "spectrum (strongest modes first)" in text and "period" in text
    model = EpisodicKoopman.load(models / "s0.ekm")
    period = model.spectrum().summary()[0]["period"]
    assert f"{period:.4g}" in text
    assert "episodes" in text and str(model.memory_size) in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_shared_model_and_bad_files(cli, write, tmp_path):
    models = tmp_path / "models"
    frame = long_frame(2, 200)
    args = ["--memory-scope", "shared", "--partitions", "1", "--save-models", models]
    memory = tmp_path / "shared.ekmem"
    result = cli(
        "forecast", write(frame), "--horizon", 2, *args, "--save-memory", memory, *SMALL_ARGS
    )
    assert result.exit_code == 0, result.stderr
    assert memory.is_file()
    shown = cli("inspect", models / "s1.ekm", "--plot", tmp_path / "shared.png")
    assert shown.exit_code == 0
    assert "series (sources)" in shown.stdout and "2" in shown.stdout

    assert cli("inspect", tmp_path / "missing.ekm").exit_code == 2
    junk = write("not a model", "junk.ekm")
    bad = cli("inspect", junk)
    assert bad.exit_code == 2 and "not an episodic-koopman model file" in bad.stderr
    assert "Traceback" not in bad.output
