"""Argument checks shared by the library, the jobs and the CLI: one home, one wording.

Each check returns the value it accepted (converted to a plain Python type) or raises ValueError
naming the argument and the expected value, so a bad input never becomes a silent wrong
certificate. No TensorFlow here (ground floor).
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Iterable, Optional

import numpy as np


def check_alpha(alpha, name: str = "alpha") -> float:
    """Validates a failure probability.

    Raises:
        ValueError: if `alpha` is not a finite number in the open interval (0, 1).
    """
    if isinstance(alpha, (bool, str)):
        raise ValueError(f"{name} must be a number in (0, 1), got {alpha!r}")
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1), got {alpha!r}") from None
    if not (0.0 < value < 1.0):
        raise ValueError(f"{name} must be in the open interval (0, 1), got {alpha!r}")
    return value


def check_sigma(sigma, name: str = "sigma") -> float:
    """Validates a noise level (l2 per pixel on the [0, 1] pixel scale).

    Raises:
        ValueError: if `sigma` is not a finite number > 0 (a string such as "0.25" is refused).
    """
    if isinstance(sigma, (bool, str)):
        raise ValueError(f"{name} must be a positive number (l2, pixels in [0, 1]), got {sigma!r}")
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number (l2, pixels in [0, 1]), got {sigma!r}") from None
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a finite number > 0, got {sigma!r}")
    return value


class ScaleWarning(UserWarning):
    """A value that is valid but very likely in the wrong units (e.g. sigma on the [0, 255] scale)."""


SIGMA_MAX_PLAUSIBLE = 1.0
"""sigma above this (the whole [0, 1] range per pixel) is almost certainly given in [0, 255] units."""
SIGMA_MIN_PLAUSIBLE = 0.25 / 255
"""sigma below a quarter of one 8-bit level changes no quantized pixel: likely divided by 255 twice."""


def warn_sigma_scale(sigma: float, name: str = "sigma") -> float:
    """Warns (`ScaleWarning`) when a valid sigma is implausible on the [0, 1] pixel scale; returns it.

    sigma > 1 (e.g. 64, meant as 64/255) would certify radii longer than the [0, 1] cube's diagonal;
    sigma < 0.25/255 (e.g. 0.25/255) is below the quantization of 8-bit images.
    """
    if sigma > SIGMA_MAX_PLAUSIBLE:
        warnings.warn(f"{name}={sigma:g} is more than the whole [0, 1] pixel range: tfsmooth's sigma is the noise "
                      f"standard deviation per pixel on the [0, 1] scale (for 0-255 units use {sigma / 255:.4g})",
                      ScaleWarning, stacklevel=3)
    elif sigma < SIGMA_MIN_PLAUSIBLE:
        warnings.warn(f"{name}={sigma:g} is below a quarter of one 8-bit pixel level (1/255 = 0.0039) on the [0, 1] "
                      f"scale: the noise would change almost nothing (was it divided by 255 twice? "
                      f"{sigma * 255:.4g} is the same value times 255)", ScaleWarning, stacklevel=3)
    return sigma


def check_count(value, name: str, minimum: int = 1) -> int:
    """Validates an integer such as `n0`, `n`, `batch_size` or a number of steps.

    Raises:
        ValueError: if `value` is not an integer (bool refused) >= `minimum`.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_seed(seed, name: str = "seed") -> int:
    """Validates a seed: an integer in [0, 2**63) (it becomes the first word of int64 stateless seeds).

    Raises:
        ValueError: if `seed` is not an integer (bool refused) in [0, 2**63).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise ValueError(f"{name} must be an integer in [0, 2**63), got {seed!r}")
    return int(seed)


def is_real(value, minimum: float = -math.inf, *, inclusive: bool = True, maximum: float = math.inf) -> bool:
    """Whether value is a finite real number (not a bool or a string), >= minimum (> if not inclusive), < maximum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return False
    return (value >= minimum if inclusive else value > minimum) and value < maximum


def check_real(value, name: str, minimum: float = -math.inf, *, inclusive: bool = True,
               maximum: float = math.inf, unit: str = "") -> float:
    """Validates a finite real number in [minimum, maximum) ((minimum, maximum) if not inclusive).

    Raises:
        ValueError: naming `name`, the range and `unit` (e.g. "l2, pixels in [0, 1]").
    """
    if not is_real(value, minimum, inclusive=inclusive, maximum=maximum):
        if minimum != -math.inf and maximum != math.inf:
            expected = f"a number in {'[' if inclusive else '('}{minimum:g}, {maximum:g})"
        elif minimum != -math.inf:
            expected = f"a finite number {'>=' if inclusive else '>'} {minimum:g}"
        elif maximum != math.inf:
            expected = f"a finite number < {maximum:g}"
        else:
            expected = "a finite number"
        suffix = f" ({unit})" if unit else ""
        raise ValueError(f"{name} must be {expected}{suffix}, got {value!r}")
    return float(value)


def check_epsilon(epsilon, name: str = "epsilon") -> float:
    """Validates an l2 attack radius on the [0, 1] pixel scale: a finite number >= 0."""
    return check_real(epsilon, name, 0.0, unit="l2, pixels in [0, 1]")


def check_choice(value, name: str, choices: Iterable[str]) -> str:
    """Validates that `value` is one of `choices` (the message lists them)."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def check_optional(value, check, *args, **kwargs) -> Optional[object]:
    """None, or `check(value, *args, **kwargs)`."""
    return None if value is None else check(value, *args, **kwargs)


def check_shard(shard) -> tuple:
    """Validates a shard (index I, count K) of a selection (`tfsmooth certify --shard I/K`): 0 <= I < K, K >= 1.

    Returns:
        (I, K) as a tuple of ints (a JSON list [I, K] is accepted).

    Raises:
        ValueError: naming `shard` and the expected form.
    """
    if (isinstance(shard, (str, bytes)) or not hasattr(shard, "__len__") or len(shard) != 2
            or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in shard)):
        raise ValueError(f"shard must be a pair (index, count) of integers with 0 <= index < count, got {shard!r}")
    index, count = int(shard[0]), int(shard[1])
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard must be (index, count) with count >= 1 and 0 <= index < count, got {shard!r}")
    return index, count
