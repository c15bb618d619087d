"""Batch forecasting of many series: long-format files, shared memory, local or Dask workers.

The input is the long format of statsforecast and TimeGPT: one row per observation,
with a series id (``unique_id``), a timestamp (``ds``) and a target (``y``). A file
without an id column is one series. `read_long` reads CSV or Parquet into a `Panel`;
`forecast_panel` fits one `EpisodicKoopman` per series and forecasts it, and
`BatchResult.frame` gives the rows ``unique_id, ds, step, mean, lower, upper``.

Problems with the file as a whole (missing file or column, unknown type, no rows)
raise `BatchInputError`. Problems with one series (duplicated or irregular
timestamps, gaps under ``missing="error"``, a non-numeric target, too few
observations) fail that series only, with a message naming it and the row (rows are
counted from 1, header excluded); the other series are still forecast.

Memory scopes
-------------
``"series"``: each model keeps its own episodic memory. Series are independent, so
they are spread over workers in chunks, and the result does not depend on the
engine, the number of jobs or the chunking (bit for bit).

``"shared"``: the series are dealt round-robin into ``partitions`` (series ``i``
goes to partition ``i % partitions``). Each partition is one task: its models share
one `EpisodeMemory` and learn *in time order*, interleaved (at each timestamp, every
series of the partition observed then learns its value), so an episode is
recallable by any series of the partition once its horizon has passed, and never
earlier. Partitions do not talk to each other while they run: there is no global
lock, and none is needed. When all partitions are done, their memories are merged
into one (`merge_memories`): the episodes of every partition, in the order in which
they completed (timestamp, then partition, then id), truncated to the memory's
capacity oldest first. The merged memory can be saved (`save_memory`) and given to
the next run (``initial_memory``), where every partition starts from a copy of it.
So episodes cross partitions at run boundaries, and within a run inside a partition.
``partitions=1`` shares everything within the run, on one worker. Results depend on
the data and on ``partitions``, never on the engine or the number of jobs.

Engines
-------
``"local"``: ``jobs`` processes (``jobs=1`` runs in this process). ``"dask"``: a Dask
distributed cluster at ``scheduler``, or a ``LocalCluster`` of ``jobs`` single-threaded
worker processes when no address is given. Every worker pins BLAS and OpenMP to one
thread (`episodic_koopman.pin_threads`).

Modules
-------
`reading` (files and frames into a `Panel`), `timestamps` (spacing, missing values,
future timestamps), `config` (`BatchConfig`), `tasks` (one chunk of series or one
partition), `shared_memory` (merge, save, load), `engines` (local processes, Dask),
`run` (`forecast_panel`), `writing` (output files), `backtest` (`panel_backtest`),
`errors`. Everything is importable from ``episodic_koopman.batch`` itself.

>>> import pandas as pd
>>> t = pd.date_range("2024-01-01", periods=120, freq="h")
>>> frame = pd.DataFrame({"unique_id": "a", "ds": t, "y": [float(i % 24) for i in range(120)]})
>>> panel = panel_from_frame(frame)
>>> result = forecast_panel(panel, BatchConfig(horizon=3, params={"delays": 8, "window": 32}))
>>> out = result.frame()
>>> list(out.columns)
['unique_id', 'ds', 'step', 'mean', 'lower', 'upper']
>>> out["ds"].dt.strftime("%H:%M").tolist(), out["step"].tolist()
(['00:00', '01:00', '02:00'], [1, 2, 3])
"""

from .backtest import PanelBacktest, panel_backtest
from .config import MEMORY_SCOPES, BatchConfig
from .engines import ENGINES
from .errors import BatchInputError, SeriesError
from .reading import (
    DEFAULT_ID,
    DEFAULT_TARGET,
    DEFAULT_TIME,
    Panel,
    SeriesData,
    exact_floats,
    panel_from_frame,
    read_long,
)
from .run import BatchResult, forecast_panel
from .shared_memory import (
    MEMORY_FORMAT,
    MEMORY_FORMAT_VERSION,
    load_memory,
    merge_memories,
    new_memory,
    save_memory,
    source_id,
)
from .tasks import (
    PartitionOutput,
    SeriesResult,
    forecast_chunk,
    forecast_one,
    forecast_partition,
    min_observations,
    model_filename,
)
from .timestamps import MISSING, Prepared, Step, future_timestamps, infer_step, prepare_series
from .writing import write_forecasts, write_model_index

__all__ = [
    "DEFAULT_ID",
    "DEFAULT_TARGET",
    "DEFAULT_TIME",
    "ENGINES",
    "MEMORY_FORMAT",
    "MEMORY_FORMAT_VERSION",
    "MEMORY_SCOPES",
    "MISSING",
    "BatchConfig",
    "BatchInputError",
    "BatchResult",
    "Panel",
    "PanelBacktest",
    "PartitionOutput",
    "Prepared",
    "SeriesData",
    "SeriesError",
    "SeriesResult",
    "Step",
    "exact_floats",
    "forecast_chunk",
    "forecast_one",
    "forecast_panel",
    "forecast_partition",
    "future_timestamps",
    "infer_step",
    "load_memory",
    "merge_memories",
    "min_observations",
    "model_filename",
    "new_memory",
    "panel_backtest",
    "panel_from_frame",
    "prepare_series",
    "read_long",
    "save_memory",
    "source_id",
    "write_forecasts",
    "write_model_index",
]
