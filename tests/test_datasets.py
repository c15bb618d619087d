import numpy as np
import pytest

from episodic_koopman import datasets


@pytest.mark.parametrize("name", sorted(datasets.SYNTHETIC))
def test_synthetic_generators_are_seeded_and_finite(name):
    a = datasets.SYNTHETIC[name](n=800)
    b = datasets.SYNTHETIC[name](n=800)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.values.shape == (800,) and np.all(np.isfinite(a.values))


def test_recurring_generators_really_recur():
    for gen in (datasets.recurring_oscillators, datasets.switching_rotations):
        labels = gen(n=6000).regimes
        changes = np.flatnonzero(np.diff(labels)) + 1
        sequence = labels[np.concatenate([[0], changes])]
        assert len(sequence) >= 10 and set(sequence) == {0, 1, 2}
        assert np.all(sequence[1:] != sequence[:-1])


def test_regime_panel_has_different_scales():
    panel = datasets.regime_panel(n_series=4, n=500)
    stds = [s.values.std() for s in panel]
    assert max(stds) / min(stds) > 5


def test_mmwr_week_start_known_dates():
    assert datasets.mmwr_week_start(1997, 40).isoformat() == "1997-09-28"
    assert datasets.mmwr_week_start(2023, 37).isoformat() == "2023-09-10"
    assert datasets.mmwr_week_start(2021, 1).isoformat() == "2021-01-03"  # Jan 1 was a Friday


def test_epidata_conversion_builds_seasons():
    payload = {
        "result": 1,
        "epidata": [
            {"epiweek": 202231, "wili": 0.8, "ili": 0.7, "num_ili": 5},
            {"epiweek": 202240, "wili": 1.5, "ili": 1.4, "num_ili": 9},
            {"epiweek": 202305, "wili": 3.1, "ili": 3.0, "num_ili": 20},
        ],
    }
    rows = datasets.ilinet_rows_from_epidata(payload)
    assert [r["season"] for r in rows] == ["2022/23"] * 3
    assert [r["season_week"] for r in rows] == ["1", "10", "27"]
    assert rows[1]["week_start"] == "2022-10-02"


def test_river_series_work_offline():
    airline = datasets.load_river("airline")
    assert len(airline) == 144 and airline.season == 12


def test_copy_from_folder(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / datasets.BIKE_FILE).write_text("instant,dteday,hr,cnt\n1,2011-01-01,0,16\n")
    copied = datasets.copy_from(src, tmp_path / "dst")
    assert [p.name for p in copied] == [datasets.BIKE_FILE]
    with pytest.raises(FileNotFoundError):
        datasets.copy_from(tmp_path / "empty", tmp_path / "dst2")


def _real(name):
    path = datasets.find_data_file(name)
    if path is None:
        pytest.skip(f"{name} not found in {[str(d) for d in datasets.data_dirs()]}")
    return path


def test_ilinet_loader_starts_at_season_2002_03_without_unreported_zeros():
    series = datasets.load_ilinet(_real(datasets.ILINET_FILE))
    assert str(series.timestamps[0]) == "2002-09-29"
    assert np.all(series.values > 0)
    assert np.all(np.diff(series.timestamps).astype(int) == 7)


def test_bike_loader_fills_the_165_missing_hours_with_zero():
    series = datasets.load_bike_sharing(_real(datasets.BIKE_FILE))
    assert len(series) == 17544  # 731 days x 24 hours
    assert np.all(np.diff(series.timestamps).astype(int) == 1)
    assert int(np.sum(series.values == 0)) == 165


def test_ett_loaders_read_ot_and_all_seven_channels():
    path = _real("ETTh1.csv")
    series = datasets.load_ett("ETTh1", path)
    assert len(series) == 17420 and series.season == 24 and series.seasons == (24, 168)
    assert str(series.timestamps[0]) == "2016-07-01T00"
    assert np.all(np.diff(series.timestamps).astype(int) == 1)
    assert series.values[0] == pytest.approx(30.5310001373291)  # OT of the first row
    channels = datasets.load_ett_channels("ETTh1", path)
    assert channels.values.shape == (17420, 7) and channels.channels[-1] == "OT"
    np.testing.assert_array_equal(channels.values[:, -1], series.values)


def test_ett_loader_rejects_gaps_and_unknown_names(tmp_path):
    header = "date," + ",".join(datasets.ETT_CHANNELS)
    gap = tmp_path / "ETTh1.csv"
    ones = ",".join(["1.0"] * 7)
    gap.write_text(f"{header}\n2016-07-01 00:00:00,{ones}\n2016-07-01 02:00:00,{ones}\n")
    with pytest.raises(ValueError, match="not hourly"):
        datasets.load_ett("ETTh1", gap)
    with pytest.raises(ValueError, match="unknown ETT"):
        datasets.load_ett("ETTm1")


def test_copy_and_fetch_keep_ett_files_byte_for_byte(tmp_path, monkeypatch):
    # CC BY-ND: the files must arrive exactly as published.
    payload = b"date,HUFL\r\n2016-07-01 00:00:00,5.827000141143799\r\n"
    src = tmp_path / "src"
    src.mkdir()
    (src / "ETTh2.csv").write_bytes(payload)
    copied = datasets.copy_from(src, tmp_path / "dst")
    assert [p.name for p in copied] == ["ETTh2.csv"]
    assert (tmp_path / "dst" / "ETTh2.csv").read_bytes() == payload

    def fake_download(url: str, timeout: float = 60.0) -> bytes:
        return b"CC BY-ND 4.0" if url.endswith("LICENSE") else payload

    monkeypatch.setattr(datasets.fetching, "_download", fake_download)
    written = datasets.fetch_ett(tmp_path / "fetched")
    assert [p.name for p in written] == ["ETTh1.csv", "ETTh2.csv", datasets.ETT_LICENSE]
    assert written[0].read_bytes() == payload
