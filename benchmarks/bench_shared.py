"""Shared vs per-series memory, measured: a multi-series rolling-origin backtest.

    python benchmarks/bench_shared.py            # regime_panel: 8 series x 2,000 steps
    python benchmarks/bench_shared.py --quick    # 4 series x 800 steps

The series of `episodic_koopman.datasets.regime_panel` share three regimes, each at
its own scale, level, phase and regime order. All series progress in time together
(`episodic_koopman.batch.panel_backtest`): at each step every series learns its value,
then forecasts at its origins, so a recall at time t sees only episodes completed by t.

Two settings: all series from the start, and the same panel where the last quarter of
the series join halfway (a "new" series has seen half as much). Scores: MASE (each
series' MAE over its own in-sample lag-1 naive MAE on its first ``start`` values,
averaged over series), sMAPE, interval coverage and the share of forecasts corrected by
a recall. Model parameters are the library defaults unless given with ``-p KEY=VALUE``.
"""

from __future__ import annotations

import argparse
import json
import time

from episodic_koopman.batch import panel_backtest
from episodic_koopman.datasets import regime_panel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-series", type=int, default=8)
    parser.add_argument("--length", type=int, default=2000)
    parser.add_argument("--horizon", type=int, default=24)
    parser.add_argument("--start", type=int, default=200)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="4 series of 800 steps")
    parser.add_argument("-p", "--param", action="append", default=[], help="KEY=VALUE")
    args = parser.parse_args()
    if args.quick:
        args.n_series, args.length = 4, 800
    params = {}
    for item in args.param:
        key, _, value = item.partition("=")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value

    panel = [s.values for s in regime_panel(args.n_series, args.length, seed=args.seed)]
    n_new = max(1, args.n_series // 4)
    join = args.length // 2
    late = [
        v[: args.length - join] if i >= args.n_series - n_new else v for i, v in enumerate(panel)
    ]
    offsets = [join if i >= args.n_series - n_new else 0 for i in range(args.n_series)]
    settings = {
        "all from the start": (panel, None),
        f"{n_new} of {args.n_series} join at t={join}": (late, offsets),
    }
    print(
        f"shared vs series memory: regime_panel({args.n_series} series x {args.length}, "
        f"seed {args.seed}), h={args.horizon}, origins from {args.start} every {args.stride}, "
        f"params {params or 'defaults'}"
    )
    header = (
        f"{'setting':28} {'series':7} {'scope':7} {'MASE':>7} {'sMAPE %':>8} "
        f"{'coverage':>9} {'recalls':>8} {'shared/series':>14}"
    )
    print(header)
    print("-" * len(header))
    for name, (values, offs) in settings.items():
        started = time.perf_counter()
        bt = panel_backtest(
            values, args.horizon, args.start, args.stride, params=params, offsets=offs
        )
        for group in bt.scores["series"]:
            base = bt.scores["series"][group]["mase"]
            for scope in ("series", "shared"):
                row = bt.scores[scope][group]
                ratio = f"{row['mase'] / base:14.3f}" if scope == "shared" else " " * 14
                print(
                    f"{name:28} {group:7} {scope:7} {row['mase']:7.3f} {row['smape']:8.2f} "
                    f"{row['coverage']:9.3f} {row['recall_rate']:8.2f} {ratio}"
                )
        print(f"{'':28} ({time.perf_counter() - started:.0f} s)")
    print("shared/series: MASE ratio (below 1: shared memory forecasts better)")


if __name__ == "__main__":
    main()
