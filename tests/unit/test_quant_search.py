"""The fallback search over a sensitivity ranking (gallop, bisect, prune,
deadline), on a synthetic evaluation function."""

from __future__ import annotations

from edgekit.compress.search import Trial, format_duration, search_fallback

RANKED = [f"l{i}" for i in range(40)]


def _budget(needed: set[str]):
    calls: list[tuple[str, ...]] = []

    def evaluate(layers: tuple[str, ...]):
        calls.append(layers)
        missing = len(needed - set(layers))
        drop = 2.0 * missing + 0.01 * len(layers)
        return drop, drop, missing == 0

    return evaluate, calls


def test_finds_the_needed_layers_in_few_evaluations() -> None:
    evaluate, calls = _budget({"l0", "l4"})
    messages: list[str] = []
    found = search_fallback(RANKED, evaluate, Trial((), 4.0, 4.0, False), notify=messages.append)
    assert set(found.best.layers) == {"l0", "l4"} and found.best.met and not found.stopped_early
    # gallop 1, 2, 4, 8; bisect 5..8 (6, 5); prune tries l3, l2, l1 (l4 and l0 are needed).
    assert len(calls) <= 12, calls
    # What each kept layer buys back: putting it back in int8 costs its 2 points.
    assert set(found.buy_back) == {"l0", "l4"}
    assert all(v is not None and 1.9 < v < 2.1 for v in found.buy_back.values())
    assert all("ETA" in m and "candidate" in m for m in messages) and len(messages) == len(calls)


def test_unreachable_budget_returns_the_smallest_loss() -> None:
    evaluate, calls = _budget({"not-a-candidate"})
    found = search_fallback(RANKED, evaluate, Trial((), 9.0, 9.0, False))
    assert not found.best.met and found.best.drop < 9.0
    assert calls[-1] == tuple(RANKED)  # galloped up to every candidate, then stopped


def test_deadline_keeps_the_best_so_far() -> None:
    evaluate, calls = _budget({"l0", "l30"})
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0  # every call to the clock is one second later
        return now[0]

    found = search_fallback(RANKED, evaluate, Trial((), 4.0, 4.0, False), deadline=8.0, clock=clock)
    assert found.stopped_early and 0 < len(calls) < 6
    assert found.best.drop == min(t.drop for t in found.trials) and found.best.layers in calls


def test_format_duration() -> None:
    assert format_duration(75.2) == "1 min 15 s" and format_duration(4.6) == "5 s"
