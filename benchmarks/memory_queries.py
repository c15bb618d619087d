"""Memory query benchmark (part 3 of ``bench_core``): FAISS flat vs HNSW, then the exact rerank.

It drives internal modules (`episodic_koopman.memory`, `.recall`, `.spectrum`), imported
inside the functions so that ``bench_core`` can report "skipped" if they change.
"""

from __future__ import annotations

import time

import numpy as np


def synthetic_episodes(n: int, r_max: int, state_len: int, seed: int):
    """Signatures and states shaped like real ones: two tones near the unit circle."""
    from episodic_koopman.recall import normalized_state

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


def time_queries(memory, query_keys, query_eigs, query_states, exact, candidates=32, k=10):
    """Median and p99 latency (ms) of search + rerank, and FAISS-stage recall@k."""
    from episodic_koopman.recall import KeyWeights
    from episodic_koopman.rerank import exact_distances
    from episodic_koopman.spectrum import Signature

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


def bench_memory(sizes: list[int], queries: int, ef_values: list[int]) -> list[dict]:
    from episodic_koopman.memory import EpisodeMemory
    from episodic_koopman.recall import KeyWeights, episode_key, key_dimension
    from episodic_koopman.spectrum import Signature

    r_max, state_len, k, candidates = 16, 32, 10, 32
    weights = KeyWeights(0.1, 0.0, 1.0)
    dim = key_dimension(r_max, 0, state_len)
    results = []
    print(f"\n3. memory query: FAISS top-{candidates} + exact rerank to top-{k}, key dim {dim}")
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
        results.append({"episodes": n, "index": "flat", "query_ms": flat_ms, "p99_ms": flat_p99})
        for ef in ef_values:
            hnsw.ef_search = ef
            ms, p99, recall = time_queries(hnsw, *queries_)
            print(
                f"{n:9d} {f'HNSW ef={ef}':>14s} {build_seconds['hnsw']:8.1f} {ms:9.3f} "
                f"{p99:7.3f} {recall:9.3f} {flat_ms / ms:7.1f}x"
            )
            results.append(
                {
                    "episodes": n,
                    "index": f"hnsw ef={ef}",
                    "query_ms": ms,
                    "p99_ms": p99,
                    "recall_at_10": recall,
                }
            )
        del flat, hnsw
    return results
