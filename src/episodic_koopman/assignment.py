"""Optimal assignment (minimum-cost perfect matching) of a small square cost matrix, compiled.

The exact rerank matches the eigenvalues of the query and of each candidate by an
optimal assignment (`episodic_koopman.rerank`), a dozen-by-dozen problem solved for
every candidate of every recall. This is the shortest augmenting path method (Jonker
and Volgenant; in the form of Crouse, "On implementing 2D rectangular assignment
algorithms", 2016), which SciPy's ``linear_sum_assignment`` also follows. Where several
assignments are optimal, the one returned is decided by the order in which columns
are scanned and ties are broken, which is kept the same as SciPy's: columns scanned
from the last, a tie in path length resolved towards a free column and otherwise to
the first found. The tests check that both give the same assignments, ties included.

>>> import numpy as np
>>> cost = np.array([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])
>>> columns = np.empty(3, dtype=np.int64)
>>> assign(cost, 3, columns), columns.tolist()
(True, [1, 0, 2])
"""

from __future__ import annotations

import numpy as np

from .jit import kernel


@kernel
def assign(cost: np.ndarray, n: int, columns: np.ndarray) -> bool:
    """The optimal assignment of the leading ``n`` by ``n`` block of ``cost`` (float64): the
    column of each row into ``columns[:n]``. False (``columns`` unset) when the block holds
    a value that is not finite, which this solver leaves to the caller.
    """
    for i in range(n):
        for j in range(n):
            if not np.isfinite(cost[i, j]):
                return False
    u = np.zeros(n)
    v = np.zeros(n)
    path_costs = np.empty(n)
    path = np.full(n, -1, dtype=np.int64)
    row_of = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        columns[i] = -1
    in_rows = np.zeros(n, dtype=np.bool_)
    in_columns = np.zeros(n, dtype=np.bool_)
    remaining = np.empty(n, dtype=np.int64)
    for current in range(n):
        # Shortest augmenting path from row `current` to a free column (Dijkstra on
        # reduced costs, which the dual variables u, v keep non-negative).
        low_total = 0.0
        n_remaining = n
        for it in range(n):
            remaining[it] = n - it - 1  # scanned from the last: a constant matrix gives 0..n-1
            path_costs[it] = np.inf
            in_rows[it] = False
            in_columns[it] = False
        sink = -1
        i = current
        while sink == -1:
            index = -1
            lowest = np.inf
            in_rows[i] = True
            for it in range(n_remaining):
                j = remaining[it]
                reduced = low_total + cost[i, j] - u[i] - v[j]
                if reduced < path_costs[j]:
                    path[j] = i
                    path_costs[j] = reduced
                # A tie goes to a free column: it ends the path.
                if path_costs[j] < lowest or (path_costs[j] == lowest and row_of[j] == -1):
                    lowest = path_costs[j]
                    index = it
            low_total = lowest
            j = remaining[index]
            if row_of[j] == -1:
                sink = j
            else:
                i = row_of[j]
            in_columns[j] = True
            n_remaining -= 1
            remaining[index] = remaining[n_remaining]
        # Update the duals, then flip the assignment along the path.
        u[current] += low_total
        for i in range(n):
            if in_rows[i] and i != current:
                u[i] += low_total - path_costs[columns[i]]
        for j in range(n):
            if in_columns[j]:
                v[j] -= low_total - path_costs[j]
        j = sink
        while True:
            i = path[j]
            row_of[j] = i
            columns[i], j = j, columns[i]
            if i == current:
                break
    return True


__all__ = ["assign"]
