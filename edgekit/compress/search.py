"""The fewest layers to keep in float: a search over a sensitivity ranking.

Given layers ranked worst first (:func:`edgekit.compress.fallback.rank_layers`),
the search keeps the top ``k`` in float and evaluates the whole model only for
a handful of ``k``:

1. **Gallop**: ``k = 1, 2, 4, 8, ...`` until the budget holds (or every
   candidate is in float and it still does not: the budget cannot be met).
2. **Bisect** between the last ``k`` that failed and the first that held.
3. **Prune**: each chosen layer, least sensitive first, is tried back in
   int8 and stays there if the budget still holds (at most
   :data:`MAX_PRUNE_TRIES` tries). Each try also measures what that layer buys
   back: the loss without it minus the loss with it.

That is about ``2·log2(k) + 1`` evaluations plus the prune tries, against one
per candidate layer for leave-one-out. A deadline stops the search between
evaluations; the best model found so far is returned (the fewest float layers
among those meeting the budget, else the smallest loss).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

__all__ = ["SearchResult", "Trial", "search_fallback", "MAX_PRUNE_TRIES", "format_duration"]

logger = logging.getLogger(__name__)

#: The most layers the prune step tries back in int8 (one evaluation each).
MAX_PRUNE_TRIES = 8

S = TypeVar("S")


@dataclass
class Trial(Generic[S]):
    """One evaluated set of float layers.

    Attributes:
        layers: The layers kept in float.
        score: What the evaluation returned.
        drop: Its loss in percentage points.
        met: Whether it meets the budget.
    """

    layers: tuple[str, ...]
    score: S
    drop: float
    met: bool


@dataclass
class SearchResult(Generic[S]):
    """What :func:`search_fallback` found.

    Attributes:
        best: The chosen trial (see the module docstring for "best").
        trials: Every evaluation, in order.
        stopped_early: True when the deadline ended the search.
        buy_back: For chosen layers whose removal was tried: points of loss
            that keeping the layer in float saves (``None``: not measured).
    """

    best: Trial[S]
    trials: list[Trial[S]]
    stopped_early: bool = False
    buy_back: dict[str, float | None] = field(default_factory=dict)


def format_duration(seconds: float) -> str:
    """``75.2`` -> ``"1 min 15 s"``."""
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


class _Deadline(Exception):
    pass


def _better(a: Trial[S], b: Trial[S] | None) -> bool:
    if b is None:
        return True
    if a.met != b.met:
        return a.met
    if a.met:
        return (len(a.layers), a.drop) < (len(b.layers), b.drop)
    return (round(a.drop, 9), len(a.layers)) < (round(b.drop, 9), len(b.layers))


def search_fallback(
    ranked: Sequence[str],
    evaluate: Callable[[tuple[str, ...]], tuple[S, float, bool]],
    base: Trial[S],
    *,
    deadline: float | None = None,
    notify: Callable[[str], None] = lambda msg: None,
    clock: Callable[[], float] = time.monotonic,
) -> SearchResult[S]:
    """Finds few top-ranked layers whose float computation meets the budget.

    Args:
        ranked: Candidate layers, most harmful first.
        evaluate: ``evaluate(layers) -> (score, drop, met)`` for a model with
            ``layers`` in float.
        base: The trial of the fully quantized model (already evaluated).
        deadline: ``clock()`` value after which no new evaluation starts.
        notify: Progress messages: one per evaluation, with an ETA.
        clock: Time source (seconds).
    """
    trials: list[Trial[S]] = [base]
    durations: list[float] = []
    best: list[Trial[S] | None] = [base]
    n = len(ranked)
    memo: dict[int, Trial[S]] = {}

    def run(layers: tuple[str, ...], what: str, remaining_after: int) -> Trial[S]:
        if deadline is not None and clock() >= deadline:
            raise _Deadline
        t0 = clock()
        score, drop, met = evaluate(layers)
        durations.append(clock() - t0)
        trial = Trial(layers, score, drop, met)
        trials.append(trial)
        if _better(trial, best[0]):
            best[0] = trial
        mean = sum(durations) / len(durations)
        notify(
            f"candidate {len(durations)} ({what}): {len(layers)} layer(s) in float -> loss {drop:.2f} points, "
            f"{'meets' if met else 'misses'} the budget [{format_duration(durations[-1])}; "
            f"about {remaining_after} more, ETA {format_duration(mean * remaining_after)}]"
        )
        return trial

    def top(k: int, what: str, remaining_after: int) -> Trial[S]:
        if k not in memo:
            memo[k] = run(tuple(ranked[:k]), what, remaining_after)
        return memo[k]

    def bisect_steps(lo: int, hi: int) -> int:
        return max(0, math.ceil(math.log2(max(1, hi - lo))))

    def prune_tries(k: int) -> int:
        return 0 if k <= 1 else min(MAX_PRUNE_TRIES, k)

    stopped = False
    buy_back: dict[str, float | None] = {}
    try:
        # 1. Gallop.
        lo, hi, k = 0, None, 1
        while n:
            k = min(k, n)
            guess = bisect_steps(k // 2, k) + prune_tries(k)
            if top(k, f"top {k} of {n}", guess).met:
                hi = k
                break
            lo = k
            if k == n:
                break
            k *= 2
        if hi is None:
            return SearchResult(best[0] or base, trials, False, buy_back)  # type: ignore[arg-type]
        # 2. Bisect.
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if top(mid, f"bisect {lo + 1}..{hi}", bisect_steps(lo, hi) - 1 + prune_tries(hi)).met:
                hi = mid
            else:
                lo = mid
        chosen = list(ranked[:hi])
        current = memo[hi]
        # 3. Prune, least sensitive first.
        tries = list(reversed(chosen))[:MAX_PRUNE_TRIES]
        for j, name in enumerate(tries):
            if len(chosen) == 1 and name == chosen[0]:
                # Without it the model is the base model, already evaluated.
                buy_back[name] = base.drop - current.drop
                break
            trial_layers = tuple(c for c in chosen if c != name)
            trial = run(trial_layers, f"without {name}", len(tries) - j - 1)
            buy_back[name] = trial.drop - current.drop
            if trial.met:
                chosen = list(trial_layers)
                current = trial
                del buy_back[name]
    except _Deadline:
        stopped = True
    result = best[0] or base
    kept = set(result.layers)
    return SearchResult(result, trials, stopped, {k: v for k, v in buy_back.items() if k in kept})
