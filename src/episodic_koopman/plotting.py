"""Figures for backtests (matplotlib, imported lazily: it is the ``plot`` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .evaluation import BacktestResult


def plot_backtest(
    result: BacktestResult,
    path: str | Path,
    n_origins: int = 3,
    context: int | None = None,
    timestamps: np.ndarray | None = None,
    unit: str | None = None,
) -> None:
    """Three panels: forecasts at a few origins, one recall explained, MAE by step ahead.

    1. The end of the evaluated range, on real times when ``timestamps`` (one per value)
       are given, else on observation indices, with ek's forecast and interval at
       ``n_origins`` origins (a star where memory was recalled) and every peer's at the
       last one. The title gives how often memory was recalled over the whole range.
    2. For the last shown origin where memory was recalled: the present window and
       ek's forecast, over the recalled episode's own window and what followed it
       (z-scored to the present window, as the analog expert aligns it), with the
       episode's time marked.
    3. MAE per step ahead for every model.

    ``unit`` labels the value axis (what a value measures).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    horizon = result.horizon
    season = result.season or 0
    # Enough context to see a few cycles, little enough that an h-step forecast is visible.
    context = context or int(np.clip(max(10 * horizon, 3 * season, 60), 60, 400))
    origins = result.origins
    values = result.values
    last = min(int(origins[-1]) + horizon, values.size - 1)
    first = max(int(origins[0]), last - context)
    if timestamps is not None and len(timestamps) != values.size:
        raise ValueError(f"{len(timestamps)} timestamps for {values.size} values")
    x = np.asarray(timestamps) if timestamps is not None else np.arange(values.size)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {name: palette[i % len(palette)] for i, name in enumerate(result.runs)}
    fig, (top, middle, bottom) = plt.subplots(
        3,
        1,
        figsize=(11, 10),
        gridspec_kw={"height_ratios": [2.2, 1.4, 1]},
        constrained_layout=True,
    )

    top.plot(x[first : last + 1], values[first : last + 1], color="0.2", lw=1.0, label="series")
    shown = [i for i, o in enumerate(origins) if o >= first and o + horizon <= last]
    shown = shown or [len(origins) - 1]
    picks = [
        shown[p] for p in np.unique(np.linspace(0, len(shown) - 1, n_origins).round().astype(int))
    ]
    ek = result.runs.get("ek")
    recalled_at = {int(r["origin"]) for r in ek.recalls} if ek is not None else set()
    marker = "o" if horizon <= 48 else None
    for k, i in enumerate(picks):
        o = int(origins[i])
        steps = x[o + 1 : o + 1 + horizon]
        top.axvline(x[o], color="0.75", lw=0.8, ls=":")
        for name, run in result.runs.items():
            emphasis = name == "ek"
            if not emphasis and i != picks[-1]:
                continue  # peers at the last origin only: one comparison, readable
            top.plot(
                steps,
                run.forecasts[i][: steps.size],
                color=color[name],
                lw=2.0 if emphasis else 1.0,
                ls="-" if emphasis else "--",
                marker=marker,
                ms=3.5 if emphasis else 2.5,
                alpha=1.0 if emphasis else 0.85,
                label=name if (emphasis and k == 0) or (not emphasis) else None,
            )
            if emphasis and run.lower is not None and run.upper is not None:
                top.fill_between(
                    steps,
                    run.lower[i][: steps.size],
                    run.upper[i][: steps.size],
                    color=color[name],
                    alpha=0.18,
                    label="ek interval" if k == 0 else None,
                )
        if o in recalled_at:
            top.plot(
                [x[o]],
                [values[o]],
                marker="*",
                ms=13,
                color=color.get("ek"),
                mec="white",
                ls="none",
                label="memory recalled here" if k == len(picks) - 1 else None,
            )
    rate = (
        f"; memory recalled at {len(recalled_at) / len(origins):.0%} of {len(origins)} origins"
        if ek is not None and len(origins)
        else ""
    )
    top.set_title(
        f"{result.name}: ek's {horizon}-step forecasts at {len(picks)} origins, "
        f"peers at the last{rate}"
    )
    top.set_xlabel("time" if timestamps is not None else "observation index")
    top.set_ylabel(unit or "value")
    top.legend(fontsize=8, ncol=5, loc="upper left")

    _explain_recall(middle, result, picks, horizon, color.get("ek", palette[0]))
    middle.set_ylabel(unit or "value")

    for name, row in result.scores().items():
        bottom.plot(
            np.arange(1, horizon + 1),
            row["mae_by_h"],
            marker="o",
            ms=3,
            color=color[name],
            label=f"{name} ({row['mae']:.3g})",
        )
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_xlabel("steps ahead")
    bottom.set_ylabel(f"MAE ({unit})" if unit else "MAE")
    bottom.legend(fontsize=8, ncol=4)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _explain_recall(ax, result: BacktestResult, picks: list[int], horizon: int, ek_color) -> None:
    ek = result.runs.get("ek")
    by_origin = {r["origin"]: r for r in ek.recalls} if ek is not None else {}
    candidates = [i for i in picks if int(result.origins[i]) in by_origin]
    if ek is None or not candidates:
        ax.text(0.5, 0.5, "no recall at the shown origins", ha="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    i = candidates[-1]
    o = int(result.origins[i])
    match = by_origin[o]
    m = int(match["matched_origin"])
    values = result.values
    span = min(max(2 * horizon, 24), o + 1, m + 1)
    rel_past = np.arange(-span + 1, 1)
    rel_future = np.arange(1, horizon + 1)
    now = values[o - span + 1 : o + 1]
    then = values[m - span + 1 : m + 1]
    then_next = values[m + 1 : m + 1 + horizon]
    # z-score the episode onto the present window, as the analog expert aligns it.
    scale = now.std() / then.std() if then.std() > 0 else 1.0
    mapped = lambda x: (x - then.mean()) * scale + now.mean()  # noqa: E731
    ax.plot(rel_past, now, color="0.2", lw=1.2, label=f"present window (origin t={o})")
    ax.plot(
        rel_future,
        values[o + 1 : o + 1 + horizon],
        color="0.2",
        lw=1.2,
        ls=":",
        label="what happened",
    )
    ax.plot(rel_future, ek.forecasts[i], color=ek_color, lw=1.8, label="ek forecast")
    ax.plot(
        rel_past,
        mapped(then),
        color="tab:red",
        lw=1.0,
        alpha=0.8,
        label=f"recalled episode t={m} (weight {match['weight']:.2f})",
    )
    ax.plot(
        rel_future[: then_next.size],
        mapped(then_next),
        color="tab:red",
        lw=1.0,
        ls="--",
        alpha=0.8,
        label="what followed the episode",
    )
    ax.axvline(0.5, color="0.6", lw=0.8)
    ax.set_xlabel("steps relative to the origin (episode aligned onto the present)")
    ax.set_title("why the forecast looks the way it does: the strongest recalled episode")
    ax.legend(fontsize=8, ncol=2, loc="best")
