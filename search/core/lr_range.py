"""The arithmetic of the learning-rate range test (Smith 2017): a smoothed loss curve and the rates read off it."""

from __future__ import annotations

import math


def smooth(values: list[float], beta: float = 0.8) -> list[float]:
    """Bias-corrected exponential moving average (as in fastai's lr_find)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out


def steepest(lrs: list[float], losses: list[float]) -> float:
    """The rate at the steepest descent of the smoothed loss against log(lr), before it blows up."""
    s = smooth(losses)
    best = min(s)
    # Only consider the sweep up to where the loss climbs far above its minimum.
    end = next((i for i, v in enumerate(s) if i > s.index(best) and v > 4 * best), len(s))
    slopes = [(s[i + 1] - s[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1])) for i in range(1, end - 1)]
    if not slopes:
        return lrs[s.index(best)]
    return lrs[1 + min(range(len(slopes)), key=slopes.__getitem__)]


def suggest(lrs: list[float], losses: list[float]) -> float:
    """A tenth of the rate at the smoothed loss minimum: robust to the noise of random holes, where the
    steepest-descent point often sits right at the edge of divergence."""
    s = smooth(losses)
    return lrs[s.index(min(s))] / 10
