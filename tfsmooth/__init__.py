"""tfsmooth: certified adversarial robustness by randomized smoothing in TensorFlow/Keras.

The public façade. A smoothed classifier g(x) = argmax_c P(f(x + delta) = c), delta ~ N(0, sigma^2 I),
is provably constant within an l2 ball of radius sigma * Phi^{-1}(p_a_lower) (Cohen, Rosenfeld &
Kolter, ICML 2019). Pixels are in [0, 1]; sigma and radii are l2 norms on that scale.

Names are imported lazily (PEP 562), so `import tfsmooth.results` or `tfsmooth analyze` does not
pay TensorFlow's start-up.
"""

import importlib

from tfsmooth.stats import ABSTAIN

__version__ = "0.1.0"

_LAZY = {
    "Certificate": "tfsmooth.smoothing",
    "Prediction": "tfsmooth.smoothing",
    "SmoothedClassifier": "tfsmooth.smoothing",
    "recertify": "tfsmooth.smoothing",
    "GaussianAugmentedModel": "tfsmooth.training",
    "SmoothAdvModel": "tfsmooth.training",
    "export_saved_model": "tfsmooth.export",
    "load_model": "tfsmooth.models.io",
}
_SUBMODULES = ("analysis", "attacks", "checks", "counting", "data", "export", "files", "jobs", "models", "noise",
               "results", "smoothing", "stats", "training")

__all__ = ["ABSTAIN", *_LAZY, *_SUBMODULES]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"tfsmooth.{name}")
    raise AttributeError(f"module 'tfsmooth' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
