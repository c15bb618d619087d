"""``episodic-koopman demo``: stream a synthetic series through the model."""

from __future__ import annotations

import time

import numpy as np
import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer) -> None:
    app.command()(demo)


def demo(
    steps: int = typer.Option(1500, min=200, help="Observations to stream."),
    horizon: int = typer.Option(12, min=1, help="Steps ahead to forecast."),
    every: int = typer.Option(300, min=1, help="Print a forecast every this many steps."),
    seed: int = typer.Option(0, help="Seed of the synthetic series."),
) -> None:
    """Stream a series whose regimes recur and print live forecasts with and without memory."""
    from episodic_koopman import EpisodicKoopman, pin_threads

    pin_threads()
    console = Console()
    rng = np.random.default_rng(seed)
    periods = rng.choice([10.0, 17.0, 29.0], size=steps // 150 + 1)
    t = np.arange(steps)
    y = np.sin(2 * np.pi * t / np.repeat(periods, 150)[:steps]) + 0.05 * rng.standard_normal(steps)
    with_memory = EpisodicKoopman(delays=16, window=128, episode_horizon=horizon)
    without = EpisodicKoopman(delays=16, window=128, episode_horizon=horizon, memory=None)
    errors: dict[str, list[float]] = {"memory": [], "no memory": []}
    started = time.perf_counter()
    for k, value in enumerate(y):
        if with_memory.is_fitted and k + horizon <= steps:
            truth = y[k : k + horizon]
            errors["memory"].append(float(np.mean(np.abs(with_memory.forecast(horizon) - truth))))
            errors["no memory"].append(float(np.mean(np.abs(without.forecast(horizon) - truth))))
        if k and k % every == 0 and with_memory.is_fitted:
            f = with_memory.predict(horizon)
            table = Table(title=f"t={k}: next {horizon} steps", show_lines=False)
            for name in ("step", "mean", "lower", "upper"):
                table.add_column(name, justify="right")
            for h in range(min(horizon, 4)):
                table.add_row(
                    str(h + 1), f"{f.mean[h]:.3f}", f"{f.lower[h]:.3f}", f"{f.upper[h]:.3f}"
                )
            console.print(table)
            top = f.spectrum.summary()[0] if f.spectrum else None
            if top and top["period"]:
                console.print(f"  dominant period {top['period']:.1f} steps")
            if f.recall_applied:
                best = f.recalled[0]
                console.print(
                    f"  recalled episode {best.id} from t={best.origin} (weight {best.weight:.2f})"
                )
        with_memory.learn_one(float(value))
        without.learn_one(float(value))
    elapsed = time.perf_counter() - started
    console.print(
        f"\nMAE over {len(errors['memory'])} forecasts: memory {np.mean(errors['memory']):.4f}, "
        f"no memory {np.mean(errors['no memory']):.4f}  ({steps / elapsed:.0f} obs/s for both)"
    )
