"""The ``episodic-koopman`` command line.

Each command group lives in its own module and adds itself to the app with
``register(app)``; this module only wires them together.
"""

from __future__ import annotations

import typer

from . import backtest, batch, data, demo, serve

app = typer.Typer(
    name="episodic-koopman",
    help="Online Koopman forecasting with an episodic memory of past operator fits.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root() -> None:
    """Online Koopman forecasting with an episodic memory of past operator fits."""


for module in (demo, backtest, data, serve, batch):
    module.register(app)


def main() -> None:
    app()
