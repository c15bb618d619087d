import os

import numpy as np
import pytest

from episodic_koopman.index_search import flat_codes, scan_codes, search_range
from episodic_koopman.key_codec import KeyCodec
from episodic_koopman.memory import EpisodeMemory


def filled(n: int, dim: int = 12, capacity: int = 10_000, **kw) -> EpisodeMemory:
    rng = np.random.default_rng(0)
    mem = EpisodeMemory(dim=dim, capacity=capacity, **kw)
    for i in range(n):
        mem.add(rng.standard_normal(dim), {"value": np.array([float(i)])})
    return mem


def test_flat_search_equals_brute_force():
    mem = filled(500)
    rng = np.random.default_rng(1)
    for _ in range(20):
        q = rng.standard_normal(12)
        ids, d2 = mem.search(q, k=10)
        exact_ids, exact_d2 = mem.exact_search(q, k=10)
        np.testing.assert_array_equal(ids, exact_ids)
        np.testing.assert_allclose(d2, exact_d2, rtol=1e-4)


def test_hnsw_with_wide_beam_equals_brute_force_and_is_used_past_threshold():
    mem = filled(600, hnsw_threshold=300, ef_search=600)
    assert mem.uses_hnsw
    rng = np.random.default_rng(2)
    for _ in range(20):
        q = rng.standard_normal(12)
        np.testing.assert_array_equal(mem.search(q, 10)[0], mem.exact_search(q, 10)[0])


def test_fifo_eviction_and_soft_deletion_never_return_evicted_ids():
    mem = filled(1000, capacity=100)
    assert len(mem) == 100
    assert mem.oldest_id == 900
    rng = np.random.default_rng(3)
    for _ in range(20):
        ids, _ = mem.search(rng.standard_normal(12), k=50)
        assert ids.size == 50
        assert ids.min() >= 900
    assert mem.n_rebuilds > 0  # dead entries were dropped from the index
    assert mem.get(np.array([950]))["value"][0, 0] == 950.0
    with pytest.raises(KeyError):
        mem.get(np.array([10]))


def test_planted_episode_is_retrieved_first():
    mem = filled(2000, dim=12)
    planted = np.full(12, 0.25)
    planted_id = mem.add(planted, {"value": np.array([-1.0])})
    filled_more = np.random.default_rng(9)
    for _ in range(200):
        mem.add(filled_more.standard_normal(12), {"value": np.array([0.0])})
    ids, _ = mem.search(planted + 1e-3, k=3)
    assert ids[0] == planted_id


def test_state_round_trip_preserves_search_results():
    mem = filled(700, capacity=400, hnsw_threshold=300)
    meta, arrays = mem.get_state()
    clone = EpisodeMemory(dim=12, capacity=400, hnsw_threshold=300)
    clone.set_state(meta, arrays)
    q = np.random.default_rng(4).standard_normal(12)
    for a, b in zip(mem.search(q, 8), clone.search(q, 8), strict=True):
        np.testing.assert_array_equal(a, b)


def test_non_finite_key_is_rejected_without_change():
    mem = filled(5)
    with pytest.raises(ValueError):
        mem.add(np.full(12, np.nan), {"value": np.array([0.0])})
    assert len(mem) == 5 and mem.next_id == 5


def test_add_many_equals_adding_one_by_one():
    rng = np.random.default_rng(6)
    keys = rng.standard_normal((250, 12))
    values = np.arange(250.0)[:, None]
    one = EpisodeMemory(dim=12, capacity=100)
    for key, value in zip(keys, values, strict=True):
        one.add(key, {"value": value})
    many = EpisodeMemory(dim=12, capacity=100)
    many.add_many(keys[:30], {"value": values[:30]})
    many.add_many(keys[30:], {"value": values[30:]})
    assert (one.oldest_id, one.next_id) == (many.oldest_id, many.next_id)
    q = rng.standard_normal(12)
    np.testing.assert_array_equal(one.search(q, 10)[0], many.search(q, 10)[0])
    np.testing.assert_array_equal(
        one.get(one.live_ids())["value"], many.get(many.live_ids())["value"]
    )


def test_search_does_not_change_the_index_and_sees_unindexed_episodes():
    mem = filled(70, hnsw_threshold=20)  # HNSW, with a tail not yet in FAISS
    assert mem.n_unindexed > 0
    before = (mem.n_unindexed, mem.n_rebuilds, mem.index.ntotal)
    rng = np.random.default_rng(8)
    for _ in range(5):
        q = rng.standard_normal(12)
        ids, _ = mem.search(q, 5)
        assert ids.size == 5
    assert (mem.n_unindexed, mem.n_rebuilds, mem.index.ntotal) == before
    newest_key = mem.keys(np.array([mem.next_id - 1]))[0]
    assert mem.search(newest_key, 1)[0][0] == mem.next_id - 1


def test_keys_are_stored_once_as_half_floats_and_survive_rebuilds():
    mem = filled(300, capacity=100)
    ids = mem.live_ids()
    keys = mem.keys(ids)
    np.testing.assert_array_equal(keys, keys.astype(np.float16).astype(np.float32))
    rebuilds = mem.n_rebuilds
    mem.rebuild()
    assert mem.n_rebuilds == rebuilds + 1 and mem.n_dead_indexed == 0
    np.testing.assert_array_equal(mem.keys(ids), keys)


def test_row_table_reuses_equal_rows_and_collects_unreferenced_ones():
    from episodic_koopman.episode_refs import EpisodeRefs, RowTable

    table = RowTable()
    rows = [EpisodeRefs.reuse_or_append(table, {"v": np.array([float(i // 2)])}) for i in range(8)]
    assert rows == [0, 0, 1, 1, 2, 2, 3, 3]
    for i in range(4, 100):
        table.append({"v": np.array([float(i)])})
        table.drop_below(i - 2)  # only the last three stay referred to
    assert len(table) == 3
    assert table.rows(np.array([97, 99]))["v"].ravel().tolist() == [97.0, 99.0]
    with pytest.raises(KeyError):
        table.rows(np.array([96]))
    meta, arrays = table.get_state()
    clone = RowTable()
    clone.set_state(meta, arrays)
    assert clone.rows(np.array([98]))["v"][0, 0] == 98.0
    assert clone.append({"v": np.array([0.5])}) == 100


@pytest.mark.parametrize("strategy", ["mixture", "residual", "transfer"])
def test_references_after_the_history_wraps_equal_a_memory_of_copies(strategy, tmp_path):
    """A model's own memory (offsets into its history, a fit table) recalls exactly what a
    memory holding copies does, long after the history ring and the memory wrapped."""
    from episodic_koopman import EpisodicKoopman
    from episodic_koopman.config import MemoryConfig

    t = np.arange(1500.0)
    y = np.sin(2 * np.pi * t / 23) + 0.3 * np.sin(2 * np.pi * t / 7) + 0.01 * np.cos(t * t)
    config = MemoryConfig(capacity=90, stride=2, strategy=strategy)
    own = EpisodicKoopman(delays=8, window=32, episode_horizon=6, memory=config)
    copying = EpisodicKoopman(delays=8, window=32, episode_horizon=6, memory=config)
    copying.attach_memory(copying.new_memory())
    for part in np.array_split(y, 7):
        own.learn_many(part)
        copying.learn_many(part)
        a, b = own.predict(12), copying.predict(12)
        np.testing.assert_array_equal(a.mean, b.mean)
        assert a.recalled == b.recalled
    memory = own.episode_memory
    assert not memory.holds_copies and copying.episode_memory.holds_copies
    assert own._pipeline.obs.history.count > own._pipeline.obs.history.length  # wrapped
    refs = own._pipeline.recorder.refs
    oldest = memory.get(np.array([memory.oldest_id]))
    assert refs.fits.first == min(oldest["fit"][0], refs.fits.next - 1)  # collected
    assert len(refs.fits) <= 90
    ids = memory.live_ids()
    mine = own._pipeline.recaller.records(ids)
    theirs = copying._pipeline.recaller.records(copying.episode_memory.live_ids())
    for name in ("state", "history", "continuation", "eigenvalues", "rank", "origin"):
        np.testing.assert_array_equal(mine[name], theirs[name])
    path = tmp_path / "own.ekm"
    own.save(path)
    loaded = EpisodicKoopman.load(path)
    # The index is not saved: its keys are made again from the references, bit for bit.
    np.testing.assert_array_equal(loaded.episode_memory.keys(ids), memory.keys(ids))
    np.testing.assert_array_equal(memory.keys(ids), copying.episode_memory.keys(ids))
    loaded.learn_many(y[:200])
    own.learn_many(y[:200])
    np.testing.assert_array_equal(loaded.predict(12).mean, own.predict(12).mean)


def bounded(n: int, dim: int = 6, **kw) -> EpisodeMemory:
    rng = np.random.default_rng(4)
    bounds = np.linspace(0.5, 2.0, dim)
    mem = EpisodeMemory(dim=dim, key_bounds=bounds, **kw)
    for i in range(n):
        mem.add(rng.uniform(-1.2, 1.2, dim) * bounds, {"value": np.array([float(i)])})
    return mem


def test_8bit_keys_cost_a_byte_per_coordinate_and_round_once():
    mem = bounded(300)
    assert mem.index.code_size == mem.dim  # half of the float16 codes' two bytes
    stored = mem.keys(mem.live_ids())
    # Rounding is idempotent: the index, the unindexed tail and a rebuild hold the same values.
    np.testing.assert_array_equal(mem.codec.round(stored), stored)
    # Keys past the bounds saturate; inside them the error is at most half a step.
    step = 2 * mem.codec.bounds / 255
    rng = np.random.default_rng(5)
    inside = rng.uniform(-1, 1, (50, mem.dim)) * mem.codec.bounds
    assert np.all(np.abs(mem.codec.round(inside) - inside) <= step / 2 + 1e-6)
    mem.rebuild()
    np.testing.assert_array_equal(mem.keys(mem.live_ids()), stored)


def test_8bit_search_ranks_by_the_stored_keys_and_survives_save_load():
    mem = bounded(500, capacity=400)
    rng = np.random.default_rng(6)
    clone = EpisodeMemory(dim=mem.dim, capacity=400)  # no bounds: the saved state has them
    clone.set_state(*mem.get_state())
    for _ in range(20):
        q = rng.uniform(-1, 1, mem.dim)
        ids, _ = mem.search(q, k=10)
        np.testing.assert_array_equal(ids, mem.exact_search(q, k=10)[0])
        np.testing.assert_array_equal(clone.search(q, k=10)[0], ids)
    np.testing.assert_array_equal(clone.codec.bounds, mem.codec.bounds)


def test_key_bounds_must_fit_the_keys():
    with pytest.raises(ValueError, match="key_bounds"):
        EpisodeMemory(dim=3, key_bounds=np.ones(2))
    with pytest.raises(ValueError, match="positive"):
        EpisodeMemory(dim=2, key_bounds=np.array([1.0, 0.0]))
    mem = EpisodeMemory(dim=2, key_bounds=np.ones(2))
    with pytest.raises(ValueError, match="finite"):
        mem.add(np.array([np.nan, 0.0]), {"value": np.zeros(1)})
    assert len(mem) == 0


def test_fit_signatures_are_saved_without_their_rank_padding():
    """Eigenvalues (and modes) padded to the largest rank are saved ragged and padded
    again bit for bit; padding that is not all-zero bits is saved whole."""
    from episodic_koopman.episode_refs import _padded, _ragged

    rng = np.random.default_rng(3)
    rank = np.array([2, 0, 4, 1])
    eigenvalues = rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4))
    modes = rng.normal(size=(4, 4, 3)) + 0j
    for column in (eigenvalues, modes):
        column[np.arange(4) >= rank[:, None]] = 0
    arrays = {"rank": rank, "eigenvalues": eigenvalues, "modes": modes, "ref_mean": rank * 1.0}
    cut, widths = _ragged(arrays)
    assert widths == {"eigenvalues": 4, "modes": 4}
    assert cut["eigenvalues"].shape == (7,) and cut["modes"].shape == (7, 3)
    back = _padded(cut, widths)
    for name, column in arrays.items():
        assert back[name].dtype == column.dtype
        assert back[name].tobytes() == column.tobytes(), name

    signed = eigenvalues.copy()
    signed[1, 0] = complex(-0.0, 0.0)  # equal to zero, not the same bits
    cut, widths = _ragged({"rank": rank, "eigenvalues": signed})
    assert widths == {} and cut["eigenvalues"] is signed


def test_a_saved_memory_model_stores_each_fit_at_its_rank(tmp_path):
    import json
    import zipfile

    from episodic_koopman import EpisodicKoopman

    model = EpisodicKoopman(delays=12, window=64)
    model.learn_many(np.sin(np.arange(900) * 0.3) + 0.01 * np.arange(900) % 7)
    model.save(tmp_path / "m.ekm")
    with zipfile.ZipFile(tmp_path / "m.ekm") as zf:
        manifest = json.loads(zf.read("manifest.json"))
    layout = manifest["arrays"]
    ranks = layout["recall.refs.fits.rank"][1][0]
    assert ranks > 0
    assert len(layout["recall.refs.fits.eigenvalues"][1]) == 1  # ragged: one axis
    loaded = EpisodicKoopman.load(tmp_path / "m.ekm")
    assert loaded.forecast(horizon=12) == model.forecast(horizon=12)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc")
@pytest.mark.parametrize("hnsw_threshold", [10**9, 300], ids=["flat", "hnsw"])
def test_searches_do_not_leak(hnsw_threshold):
    # A flat search once made a FAISS scanner that nobody owned: ~460 bytes per search,
    # 14 MiB over these 30,000 (RAM per series grew with its age).
    mem = filled(2000, hnsw_threshold=hnsw_threshold)
    query = np.random.default_rng(4).standard_normal(12)
    for _ in range(1000):  # allocator warm-up
        mem.search(query, 32)
    before = _resident_bytes()
    for _ in range(30_000):
        mem.search(query, 32)
    assert _resident_bytes() - before < 2 * 2**20


@pytest.mark.parametrize("hnsw_threshold", [10**9, 300], ids=["flat", "hnsw"])
def test_a_query_faiss_cannot_rank_finds_only_real_episodes(hnsw_threshold):
    mem = filled(600, hnsw_threshold=hnsw_threshold)
    for query in (np.full(12, np.nan), np.r_[np.nan, np.zeros(11)]):
        ids, _ = mem.search(query, 5)
        assert np.all(ids >= mem.oldest_id)  # no -1 label turned into an id
        mem.get(ids)  # every id it gives is stored


@pytest.mark.parametrize("bounds", [None, 3.0], ids=["fp16", "8-bit"])
def test_scanning_live_codes_finds_what_a_range_selector_finds(bounds):
    """The flat search scans the live codes alone: the same distances and labels as
    FAISS's own search of the whole index with a range selector, ties included."""
    rng = np.random.default_rng(12)
    dim = 12
    codec = KeyCodec(dim, None if bounds is None else np.full(dim, bounds, np.float32))
    index = codec.new_index(None)
    keys = rng.integers(-2, 3, (3000, dim)).astype(np.float32)  # many equal distances
    index.add(keys)
    codes = flat_codes(index)
    for trial in range(200):
        query = rng.integers(-2, 3, (1, dim)).astype(np.float32) + 0.1 * (trial % 2)
        low, high = int(rng.integers(0, 1500)), int(rng.integers(1500, 3001))
        k = int(rng.integers(1, 40))
        want_d, want_l = np.empty(k, np.float32), np.empty(k, np.int64)
        search_range(index, query, low, high, want_d, want_l)
        found, labels = np.empty(k, np.float32), np.empty(k, np.int64)
        scan_codes(codes[low:high], codec.layout, codec.quantizer, query, found, labels)
        order = np.lexsort((labels, found))
        np.testing.assert_array_equal(found[order], want_d)
        np.testing.assert_array_equal(labels[order] + low, want_l)


def test_an_index_made_again_in_blocks_at_load_holds_the_saved_models_codes(monkeypatch):
    """Loading makes the index's keys again block by block: the same codes as one block."""
    from episodic_koopman import EpisodicKoopman, key_index
    from episodic_koopman.config import MemoryConfig
    from episodic_koopman.index_search import flat_codes
    from episodic_koopman.persistence import model_from_bytes, model_to_bytes

    t = np.arange(900.0)
    y = np.sin(2 * np.pi * t / 17) + 0.2 * np.sin(2 * np.pi * t / 5) + 0.01 * np.cos(t * t)
    config = MemoryConfig(capacity=300)
    model = EpisodicKoopman(delays=8, window=32, episode_horizon=6, memory=config)
    model.learn_many(y)
    data = model_to_bytes(model)
    loaded = {}
    for block_bytes in (10**9, 8 * 7 * model.episode_memory.dim):  # one block; blocks of 7
        monkeypatch.setattr(key_index, "_REBUILD_BLOCK_BYTES", block_bytes)
        loaded[block_bytes] = model_from_bytes(data)
    one, blocks = (m.episode_memory for m in loaded.values())
    assert len(one) > 7 * 10
    np.testing.assert_array_equal(flat_codes(blocks.index), flat_codes(one.index))
    live = model.episode_memory
    codes = flat_codes(live.index)[live.n_dead_indexed :]
    np.testing.assert_array_equal(flat_codes(blocks.index)[-codes.shape[0] :], codes)
    assert loaded[10**9].forecast(horizon=8) == model.forecast(horizon=8)
    assert list(loaded.values())[1].forecast(horizon=8) == model.forecast(horizon=8)
