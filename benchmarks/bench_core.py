"""Core speed benchmarks, measured side by side in one run (``make bench-core``).

1. ``learn_one`` at d=32, w=256 against refitting DMD by SVD at every step on the
   same stream (the baseline also takes the eigendecomposition a forecast needs),
   with forecasts checked equal to 1e-6, and river's SNARIMAX ``learn_one`` beside it.
2. Memory queries (FAISS top-k, then the exact Wasserstein/state rerank) at 10^4,
   10^5 and 10^6 episodes: flat against HNSW latency, and HNSW recall@10 against
   exact search.

All timings run with BLAS and OpenMP pinned to one thread. Each is the median of
``--repeats`` runs, because the machine is shared and noisy. The ratios are the
numbers to read.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np

from episodic_koopman import EpisodicKoopman, pin_threads
from episodic_koopman.memory import EpisodeMemory
from episodic_koopman.operator import batch_dmd
from episodic_koopman.recall import (
    KeyWeights,
    episode_key,
    exact_distances,
    key_dimension,
    normalized_state,
)
from episodic_koopman.spectrum import Signature


def stream(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.sin(2 * np.pi * t / 25) + 0.5 * np.sin(2 * np.pi * t / 7.3) + 0.1 * rng.normal(size=n)


def median_time(fn, repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


# -- 1. learn_one ----------------------------------------------------------------------


def bench_learn_one(steps: int, repeats: int) -> None:
    d, w, horizon = 32, 256, 24
    y = stream(d + w + steps + 1)
    warm = y[: d + w]
    rest = y[d + w :]

    def time_model(**params) -> float:
        def once() -> float:
            model = EpisodicKoopman.from_flat({"delays": d, "window": w, **params})
            model.learn_many(warm)
            started = time.perf_counter()
            for value in rest:
                model.learn_one(float(value))
            return (time.perf_counter() - started) / rest.size

        return median_time(once, repeats)

    def time_refit() -> float:
        snaps = np.stack([y[k : k + d] for k in range(y.size - d + 1)])
        started = time.perf_counter()
        for end in range(w + 1, w + 1 + steps):
            window = snaps[end - w - 1 : end]
            fit = batch_dmd(window[:-1].T, window[1:].T, "gd", 16)
            fit.propagate(window[-1], horizon, slice(d - 1, d))  # uses the eigendecomposition
        return (time.perf_counter() - started) / steps

    def time_snarimax() -> float:
        from river import time_series

        model = time_series.SNARIMAX(p=12, d=1, q=2, m=25, sd=1)
        for value in warm:
            model.learn_one(float(value))
        started = time.perf_counter()
        for value in rest:
            model.learn_one(float(value))
        return (time.perf_counter() - started) / rest.size

    refit = median_time(time_refit, repeats)
    rows = [
        ("DMD refit by SVD every step (baseline)", refit),
        (
            "learn_one, operator only (no forecasts, no memory)",
            time_model(memory=False, stride=10**6),
        ),
        ("learn_one, memory=False (scored every 8 steps)", time_model(memory=False)),
        ("learn_one, defaults (memory on)", time_model()),
        ("river SNARIMAX(p=12,d=1,q=2,m=25) learn_one", median_time(time_snarimax, repeats)),
    ]
    print(f"\n1. learn_one at d={d}, w={w} ({steps} steps, median of {repeats})")
    print(f"{'':55s} {'us/step':>9s} {'speed-up vs refit':>18s}")
    for name, seconds in rows:
        print(f"{name:55s} {seconds * 1e6:9.1f} {refit / seconds:17.1f}x")

    # Forecast equality: the incremental model against an SVD fit of its own window.
    model = EpisodicKoopman(delays=d, window=w, memory=False, refit_every=10**9)
    model.learn_many(y)
    ours = np.array(model.forecast(horizon=48))
    theirs = model.reference_forecast(48)[:, 0]
    rel = float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))
    print(
        f"forecast (48 steps) incremental vs SVD refit after {y.size} obs: max rel diff {rel:.1e}"
    )


# -- 2. memory queries -----------------------------------------------------------------


def synthetic_episodes(n: int, r_max: int, state_len: int, seed: int):
    """Signatures and states shaped like real ones: two tones near the unit circle."""
    rng = np.random.default_rng(seed)
    freqs = rng.choice(np.linspace(0.02, 0.45, 40), size=(n, 2)) + rng.normal(0, 0.002, (n, 2))
    radius = rng.uniform(0.97, 1.0, (n, 2))
    lam = radius * np.exp(2j * np.pi * freqs)
    eigs = np.zeros((n, r_max), dtype=np.complex128)
    eigs[:, 0], eigs[:, 1], eigs[:, 2], eigs[:, 3] = (
        lam[:, 0],
        lam[:, 0].conj(),
        lam[:, 1],
        lam[:, 1].conj(),
    )
    eigs[:, 4] = rng.uniform(0.9, 1.0, n)
    t = np.arange(state_len)
    phases = rng.uniform(0, 2 * np.pi, (n, 2))
    amps = rng.uniform(0.3, 1.0, (n, 2))
    windows = (
        amps[:, :1] * np.sin(2 * np.pi * freqs[:, :1] * t + phases[:, :1])
        + amps[:, 1:] * np.sin(2 * np.pi * freqs[:, 1:] * t + phases[:, 1:])
        + 0.05 * rng.normal(size=(n, state_len))
    )
    states = np.stack([normalized_state(wi[:, None]) for wi in windows])
    return eigs, states


def time_queries(
    memory: EpisodeMemory,
    query_keys: np.ndarray,
    query_eigs: np.ndarray,
    query_states: np.ndarray,
    exact: list[np.ndarray],
    candidates: int = 32,
    k: int = 10,
) -> tuple[float, float, float]:
    """Median and p99 latency (ms) of search + rerank, and FAISS-stage recall@k."""
    r_max = query_eigs.shape[1]
    weights = KeyWeights(0.1, 0.0, 1.0)
    latencies, hits = [], 0
    for i, q in enumerate(query_keys):
        started = time.perf_counter()
        ids, _ = memory.search(q, candidates)
        rec = memory.get(ids)
        sig = Signature(query_eigs[i], np.zeros((r_max, 0), complex), 5)
        dist = exact_distances(
            sig,
            query_states[i],
            rec["eigenvalues"],
            np.zeros((ids.size, r_max, 0), complex),
            rec["state"],
            weights,
        )
        np.argsort(dist)[:k]
        latencies.append(time.perf_counter() - started)
        hits += len(set(ids[:k].tolist()) & set(exact[i].tolist()))
    lat = np.array(latencies) * 1e3
    return float(np.median(lat)), float(np.percentile(lat, 99)), hits / (k * len(exact))


def bench_memory(sizes: list[int], queries: int, ef_values: list[int]) -> None:
    r_max, state_len, k, candidates = 16, 32, 10, 32
    weights = KeyWeights(0.1, 0.0, 1.0)
    dim = key_dimension(r_max, 0, state_len)
    print(f"\n2. memory query: FAISS top-{candidates} + exact rerank to top-{k}, key dim {dim}")
    print(
        f"{'episodes':>9s} {'index':>14s} {'build s':>8s} {'query ms':>9s} {'p99 ms':>7s} "
        f"{'recall@10':>9s} {'vs flat':>8s}"
    )
    for n in sizes:
        eigs, states = synthetic_episodes(n + queries, r_max, state_len, seed=n)
        keys = np.stack(
            [
                episode_key(
                    Signature(eigs[i], np.zeros((r_max, 0), complex), 5), states[i], weights
                )
                for i in range(n + queries)
            ]
        )
        flat = EpisodeMemory(dim, capacity=n, hnsw_threshold=10**12)
        hnsw = EpisodeMemory(dim, capacity=n, hnsw_threshold=0)
        records = {"eigenvalues": eigs[:n], "state": states[:n]}
        build_seconds = {}
        for label, memory in (("flat", flat), ("hnsw", hnsw)):
            started = time.perf_counter()
            memory.add_many(keys[:n], records)
            build_seconds[label] = time.perf_counter() - started
        query_keys, query_eigs, query_states = keys[n:], eigs[n:], states[n:]
        exact = [flat.exact_search(q, k)[0] for q in query_keys]

        queries_ = (query_keys, query_eigs, query_states, exact)
        flat_ms, flat_p99, flat_recall = time_queries(flat, *queries_)
        print(
            f"{n:9d} {'flat (exact)':>14s} {build_seconds['flat']:8.1f} {flat_ms:9.3f} "
            f"{flat_p99:7.3f} {flat_recall:9.3f} {1.0:7.1f}x"
        )
        for ef in ef_values:
            hnsw.ef_search = ef
            ms, p99, recall = time_queries(hnsw, *queries_)
            print(
                f"{n:9d} {f'HNSW ef={ef}':>14s} {build_seconds['hnsw']:8.1f} {ms:9.3f} "
                f"{p99:7.3f} {recall:9.3f} {flat_ms / ms:7.1f}x"
            )
        del flat, hnsw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef", default="32,64,128")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    pin_threads()
    bench_learn_one(args.steps, args.repeats)
    if not args.skip_memory:
        bench_memory(
            [int(s) for s in args.sizes.split(",")],
            args.queries,
            [int(e) for e in args.ef.split(",")],
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak memory {peak:.0f} MiB")


if __name__ == "__main__":
    main()
