"""Identical results across --jobs 1, --jobs 2 and Dask, and the CLI's engine options."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from episodic_koopman.batch import BatchConfig, forecast_panel, panel_from_frame

from .conftest import SMALL, SMALL_ARGS, long_frame


@pytest.fixture(scope="module")
def panel():
    frame = long_frame(n_series=6, n=150, seed=3)
    frame.loc[frame["unique_id"] == "s5", "y"] = np.nan  # one failure travels back too
    return panel_from_frame(frame)


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    yield cluster
    cluster.close()


def assert_identical(a, b) -> None:
    assert [r.ok for r in a.results] == [r.ok for r in b.results]
    assert [r.reason for r in a.results] == [r.reason for r in b.results]
    for x, y in zip(a.done, b.done, strict=True):
        for name in ("ds", "mean", "lower", "upper"):
            assert np.array_equal(getattr(x, name), getattr(y, name)), (x.uid, name)
    pd.testing.assert_frame_equal(a.frame(), b.frame(), check_exact=True)


@pytest.mark.parametrize("scope", ["series", "shared"])
def test_jobs_1_jobs_2_and_dask_agree_bit_for_bit(panel, dask_cluster, scope):
    cfg = BatchConfig(horizon=6, params=SMALL, scope=scope, partitions=2)
    one = forecast_panel(panel, cfg, jobs=1)
    two = forecast_panel(panel, cfg, jobs=2, chunk_size=2)
    on_dask = forecast_panel(panel, cfg, engine="dask", scheduler=dask_cluster.scheduler_address)
    assert len(one.done) == 5 and "every target value is empty" in one.failed[0].reason
    assert_identical(one, two)
    assert_identical(one, on_dask)
    if scope == "shared":
        assert one.partitions == two.partitions == on_dask.partitions == 2
        assert one.memory.next_id == two.memory.next_id == on_dask.memory.next_id
        for name in ("continuation", "source", "origin"):
            ids = one.memory.live_ids()
            assert np.array_equal(one.memory.get(ids)[name], on_dask.memory.get(ids)[name])


def test_series_scope_does_not_depend_on_chunking(panel):
    cfg = BatchConfig(horizon=4, params=SMALL)
    assert_identical(forecast_panel(panel, cfg), forecast_panel(panel, cfg, chunk_size=1))


def test_dask_engine_starts_a_local_cluster_from_the_cli(cli, write, tmp_path):
    path = write(long_frame(3, 100))
    local, dask = tmp_path / "local.csv", tmp_path / "dask.csv"
    assert cli("forecast", path, "--horizon", 4, "-o", local, *SMALL_ARGS).exit_code == 0
    result = cli(
        "forecast", path, "--horizon", 4, "-o", dask, "--engine", "dask", "-j", 2, *SMALL_ARGS
    )
    assert result.exit_code == 0, result.stderr
    assert "dask, 2 workers" in result.stderr
    assert local.read_text() == dask.read_text()


def test_an_unreachable_scheduler_is_a_clear_error(cli, write):
    path = write(long_frame(1, 60))
    args = ["--engine", "dask", "--scheduler", "tcp://127.0.0.1:9", "--timeout", "1"]
    result = cli("forecast", path, "--horizon", 2, *args, *SMALL_ARGS)
    assert result.exit_code == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in result.stderr


def test_shared_scope_on_a_cluster_needs_explicit_partitions(panel):
    from episodic_koopman.batch import BatchInputError

    cfg = BatchConfig(horizon=2, params=SMALL, scope="shared")
    with pytest.raises(BatchInputError, match="give --partitions"):
        forecast_panel(panel, cfg, engine="dask", scheduler="tcp://127.0.0.1:9")
