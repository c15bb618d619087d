"""episodic-koopman: online Koopman forecasting with an episodic memory of past fits.

>>> from episodic_koopman import EpisodicKoopman
>>> model = EpisodicKoopman(delays=8, window=32)
>>> for y in [1.0, 2.0, 3.0]:
...     model.learn_one(y)
>>> model.forecast(horizon=2)     # before the first fit: the last value
[3.0, 3.0]
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import MemoryConfig, ModelConfig
from .forecast import Forecast, RecalledEpisode
from .forecaster import EpisodicKoopman
from .spectrum import Spectrum
from .threads import pin_threads, single_threaded

__all__ = [
    "EpisodicKoopman",
    "Forecast",
    "MemoryConfig",
    "ModelConfig",
    "RecalledEpisode",
    "Spectrum",
    "__version__",
    "pin_threads",
    "single_threaded",
]
