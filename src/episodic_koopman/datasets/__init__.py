"""Datasets: the project's synthetic generators and loaders for real series.

Synthetic series (seeded, no files):

* `recurring_oscillators`: sums of two sinusoids whose frequencies and
  amplitudes switch among a few regimes that recur in an irregular order.
* `switching_rotations`: a 4-D rotation system whose two frequencies move
  smoothly (Gaussian-blurred transitions) among recurring regimes, seen through a
  nonlinear observable.
* `drifting_van_der_pol`: a van der Pol oscillator whose nonlinearity ``mu``
  drifts away and returns, changing the limit cycle's period and shape.
* `stationary_control`: two sinusoids plus AR(1) noise, on which memory must
  not hurt.
* `regime_panel`: several series that share regimes at different scales and
  phases (for shared memory across series).

Real series (files found by `find_data_file`):

* `load_ilinet`: CDC ILINet, US national weighted ILI, weekly, from season
  2002/03. That season's first nine weeks (2002 w31-39) were not reported (0
  in the file) and are dropped, so the series starts 2002-09-29.
* `load_bike_sharing`: Capital Bikeshare hourly rentals (UCI). The file lacks
  165 hours. A missing hour means no rental was recorded: isolated night
  hours, and the storm shutdowns of January 2011, Irene (August 2011) and Sandy
  (October 2012). Such hours are filled with 0.
* `load_river`: river's bundled airline passengers and water flow.
* `load_ett`, `load_ett_channels`: ETDataset ETTh1 and ETTh2 (two electricity
  transformers, hourly 2016-07-01 to 2018-06-26, no gaps): the oil temperature
  ``OT`` alone, or all 7 channels (six loads, then ``OT``). CC BY-ND 4.0: the
  files are read as published, never rewritten.

Modules: `series` (`Series`), `synthetic` (the generators), `real_data` (finding and
reading the files), `fetching` (copying or downloading them). Everything is
importable from ``episodic_koopman.datasets`` itself.

>>> s = recurring_oscillators(n=600, seed=0)
>>> s.values.shape, s.season
((600,), None)
"""

from __future__ import annotations

from .fetching import (
    BIKE_SOURCE,
    ETT_LICENSE_SOURCE,
    ETT_SOURCE,
    ILINET_SOURCE,
    copy_from,
    fetch,
    fetch_ett,
    ilinet_rows_from_epidata,
    mmwr_week_start,
)
from .real_data import (
    BIKE_FILE,
    BIKE_README,
    ETT_CHANNELS,
    ETT_FILES,
    ETT_LICENSE,
    HOURLY_SEASONS,
    ILINET_FILE,
    REAL,
    REAL_FILES,
    data_dirs,
    find_data_file,
    load_bike_sharing,
    load_ett,
    load_ett_channels,
    load_ilinet,
    load_river,
)
from .series import Series
from .synthetic import (
    SYNTHETIC,
    drifting_van_der_pol,
    recurring_oscillators,
    regime_panel,
    stationary_control,
    switching_rotations,
)

__all__ = [
    "BIKE_FILE",
    "BIKE_README",
    "BIKE_SOURCE",
    "ETT_CHANNELS",
    "ETT_FILES",
    "ETT_LICENSE",
    "ETT_LICENSE_SOURCE",
    "ETT_SOURCE",
    "HOURLY_SEASONS",
    "ILINET_FILE",
    "ILINET_SOURCE",
    "REAL",
    "REAL_FILES",
    "SYNTHETIC",
    "Series",
    "copy_from",
    "data_dirs",
    "drifting_van_der_pol",
    "fetch",
    "fetch_ett",
    "find_data_file",
    "ilinet_rows_from_epidata",
    "load",
    "load_bike_sharing",
    "load_ett",
    "load_ett_channels",
    "load_ilinet",
    "load_river",
    "mmwr_week_start",
    "recurring_oscillators",
    "regime_panel",
    "stationary_control",
    "switching_rotations",
]


def load(name: str) -> Series:
    """Any built-in dataset by name (synthetic or real)."""
    if name in SYNTHETIC:
        return SYNTHETIC[name]()
    if name in REAL:
        return REAL[name]()
    raise ValueError(f"unknown dataset {name!r}; known: {sorted(SYNTHETIC) + sorted(REAL)}")
