"""How far forecasts move when the input moves by rounding: a 1e-12 relative perturbation.

A forecaster whose output is a smooth function of its input moves by about as much
as its input (1e-12 here). A jump of order one means that a discrete decision (the
truncation rank, which episodes make the top-k, a recall threshold) was decided by
rounding. For each series and origin, the same model is fed the data and the data
times ``1 + 1e-12 * noise``; the table gives the distribution of the relative change
of the mean forecast and how often the recalled set or the rank changed.

Run: ``make bench-sensitivity`` (public API only; about a minute per dataset).
"""

from __future__ import annotations

import argparse

import numpy as np

from episodic_koopman import EpisodicKoopman, pin_threads
from episodic_koopman import datasets as ds

EPSILON = 1e-12


def series_set(n_series: int, length: int) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {}
    for name, loader in (("bike_sharing", ds.load_bike_sharing), ("ilinet", ds.load_ilinet)):
        try:
            values = np.asarray(loader().values, dtype=np.float64)
        except (FileNotFoundError, OSError) as exc:
            print(f"{name}: skipped ({exc})")
            continue
        n = min(length, values.size // 2)
        step = max(1, (values.size - n) // max(n_series, 1))
        out[name] = [values[i * step : i * step + n] for i in range(n_series)]
    for maker in (ds.recurring_oscillators, ds.switching_rotations, ds.stationary_control):
        out[maker.__name__] = [
            np.asarray(maker(n=length, seed=100 + k).values, dtype=np.float64)
            for k in range(n_series)
        ]
    return out


def measure(values: np.ndarray, origins: list[int], rng: np.random.Generator) -> list[tuple]:
    noisy = values * (1 + EPSILON * rng.standard_normal(values.size))
    a, b = EpisodicKoopman(), EpisodicKoopman()
    rows, start = [], 0
    for origin in origins:
        a.learn_many(values[start:origin])
        b.learn_many(noisy[start:origin])
        start = origin
        fa, fb = a.predict(24), b.predict(24)
        if fa.fallback:
            continue
        scale = max(float(np.max(np.abs(fa.mean))), 1e-300)
        rel = float(np.max(np.abs(fa.mean - fb.mean))) / scale
        same_recall = [r.id for r in fa.recalled] == [r.id for r in fb.recalled]
        same_rank = fa.spectrum is not None and (
            fb.spectrum is not None and fa.spectrum.eigenvalues.size == fb.spectrum.eigenvalues.size
        )
        rows.append((rel, same_recall, same_rank))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=4, help="series per dataset")
    parser.add_argument("--length", type=int, default=1500, help="observations per series")
    parser.add_argument("--origins", type=int, default=40, help="forecast origins per series")
    args = parser.parse_args()
    pin_threads()
    rng = np.random.default_rng(0)
    print(f"relative move of the 24-step mean forecast under a {EPSILON:g} relative perturbation")
    print(
        f"{'dataset':<24}{'forecasts':>10}{'median':>10}{'p99':>10}{'max':>10}"
        f"{'>1e-6':>8}{'recall differs':>16}{'rank differs':>14}"
    )
    for name, group in series_set(args.series, args.length).items():
        rows = []
        for values in group:
            first = values.size // 3
            origins = np.linspace(first, values.size, args.origins, dtype=int).tolist()
            rows += measure(values, origins, rng)
        if not rows:
            continue
        rel = np.array([r[0] for r in rows])
        print(
            f"{name:<24}{rel.size:>10}{np.median(rel):>10.1e}{np.quantile(rel, 0.99):>10.1e}"
            f"{rel.max():>10.1e}{np.mean(rel > 1e-6):>8.1%}"
            f"{np.mean([not r[1] for r in rows]):>16.1%}{np.mean([not r[2] for r in rows]):>14.1%}"
        )


if __name__ == "__main__":
    main()
