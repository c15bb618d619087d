"""Automatic embedding: the delays of a model built without ``delays``, grown with the series.

A delay embedding of ``d`` lags fits once it holds ``3 d`` observations (``d`` to
fill the first snapshot, then ``2 d`` snapshot pairs). The default of 32 lags,
chosen on long series, would leave a short series on the classical experts for
its first 96 observations: most of the life of a 144-month series.

A model built with ``delays=None`` starts at the smallest of `STAGES` and moves
up a stage at the count where the next one can fit (its *tick*, ``3 d``). The
ticks are fixed observation counts, so the delays in force are a function of the
number of observations alone, whatever the chunking, the reads or a save/load in
between.

At a tick the model is rebuilt with the new delays and its history is replayed
through it: from then on it is exactly the model with those delays fixed, fed the
same observations (its operator, mixture, intervals and memory included). The
ticks come early (the last at 96), so a replay costs a few hundred steps once.
A model's `DelaySchedule` holds the delays in force and its next tick.

>>> [stage_delays(n) for n in (0, 23, 24, 47, 48, 95, 96, 10_000)]
[8, 8, 8, 8, 16, 16, 32, 32]
>>> next_tick(8), next_tick(16), next_tick(32)
(48, 96, None)
"""

from __future__ import annotations

#: The delays an automatic embedding moves through, smallest first. The last one is
#: the fixed default chosen on the first halves of the long real series.
STAGES = (8, 16, 32)
#: Observations per lag a stage needs before it takes over (its first fit).
OBSERVATIONS_PER_LAG = 3


def stage_delays(n: int, stages: tuple[int, ...] | None = None) -> int:
    """The delays in force after ``n`` observations: the largest stage that can fit."""
    stages = STAGES if stages is None else stages
    chosen = stages[0]
    for delays in stages[1:]:
        if n >= OBSERVATIONS_PER_LAG * delays:
            chosen = delays
    return chosen


def next_tick(delays: int, stages: tuple[int, ...] | None = None) -> int | None:
    """The observation count at which a model at ``delays`` moves up (``None``: the last stage)."""
    stages = STAGES if stages is None else stages
    later = [d for d in stages if d > delays]
    return OBSERVATIONS_PER_LAG * later[0] if later else None


def first_delays() -> int:
    """The delays an automatic embedding starts with."""
    return STAGES[0]


def final_delays() -> int:
    """The delays a long series ends with (and the most an automatic embedding uses)."""
    return STAGES[-1]


class DelaySchedule:
    """A model's delays in force, and the observation count at which they change next.

    Given delays (``given``) never change. Without them the schedule starts at the
    first stage and moves up at each tick (the model replays its history then), except
    for a model sharing a memory (``shared``): growing replays every episode, which a
    shared memory cannot take back, so such a model starts at the last stage (the
    keys' size is fixed) and stays there.
    """

    def __init__(self, given: int | None, shared: bool) -> None:
        self.given, self.shared = given, shared
        self.auto: int | None = None  # the automatic delays in force (None: given)
        self.tick: int | None = None  # the count at which they change next (None: never)
        self.adopt(self.start())

    def start(self) -> int | None:
        """The automatic delays before any data (``None``: ``given``)."""
        if self.given is not None:
            return None
        return final_delays() if self.shared else first_delays()

    def adopt(self, auto: int | None) -> None:
        """Adopt automatic delays, and the count at which they change next."""
        self.auto = auto
        grows = auto is not None and not self.shared
        self.tick = next_tick(auto) if grows else None  # type: ignore[arg-type]

    @property
    def current(self) -> int:
        """The delays in force: ``given``, or those chosen so far."""
        if self.given is not None:
            return self.given
        assert self.auto is not None
        return self.auto
