"""Base classifiers whose behaviour under Gaussian noise is known in closed form.

All take float32 images [batch, 4, 4, 1] in [0, 1] (tiny, so thousands of noisy draws are cheap)
and are plain Keras functional models (Flatten + Dense with fixed weights).
"""

import keras
import numpy as np

SHAPE = (4, 4, 1)
D = 16


def _dense_model(kernel, bias):
    inputs = keras.Input(SHAPE)
    outputs = keras.layers.Dense(kernel.shape[1])(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    model.layers[-1].set_weights([kernel.astype("float32"), bias.astype("float32")])
    return model


def constant_classifier(label=3, num_classes=10):
    """f(x) = label for every x: every draw counts for `label`, so k = n."""
    bias = np.zeros(num_classes)
    bias[label] = 1.0
    return _dense_model(np.zeros((D, num_classes)), bias)


def tied_classifier():
    """f(x) = 0 if x[0] > 0.5 else 1. At x[0] = 0.5, P(f(x + delta) = 0) = 1/2 exactly."""
    kernel = np.zeros((D, 2))
    kernel[0] = [1.0, -1.0]
    return _dense_model(kernel, np.array([-0.5, 0.5]))


def linear_classifier(w, b):
    """f(x) = 1 if w.x + b > 0 else 0 (two classes).

    Under delta ~ N(0, sigma^2 I), w.(x + delta) + b ~ N(w.x + b, sigma^2 |w|^2), so
    P(f(x + delta) = 1) = Phi((w.x + b) / (sigma |w|)).
    """
    kernel = np.zeros((D, 2))
    kernel[:, 1] = np.asarray(w).reshape(-1)
    return _dense_model(kernel, np.array([0.0, b]))


def interval_classifier(u, thresholds):
    """f(x) = the number of thresholds below u.x: classes 0..K-1 are the intervals of one projection.

    Logit c is c (u.x) - (b_1 + ... + b_c), so logit c - logit (c - 1) = u.x - b_c: with increasing
    thresholds the argmax is the interval of u.x. Under delta ~ N(0, sigma^2 I), u.(x + delta) ~
    N(u.x, sigma^2 |u|^2), so p_c = Phi((b_{c+1} - u.x) / (sigma |u|)) - Phi((b_c - u.x) / (sigma |u|)),
    with b_0 = -inf and b_K = +inf (`interval_probabilities`).
    """
    u = np.asarray(u, np.float64).reshape(-1)
    thresholds = np.asarray(thresholds, np.float64)
    classes = np.arange(thresholds.size + 1)
    kernel = u[:, None] * classes[None, :]
    bias = -np.concatenate([[0.0], np.cumsum(thresholds)])
    return _dense_model(kernel, bias)


def interval_probabilities(u, thresholds, x, sigma):
    """The exact class probabilities [K] of `interval_classifier(u, thresholds)` at x under N(0, sigma^2 I)."""
    from scipy.stats import norm

    u = np.asarray(u, np.float64).reshape(-1)
    mean = float(u @ np.asarray(x, np.float64).reshape(-1))
    edges = np.concatenate([[-np.inf], thresholds, [np.inf]])
    return np.diff(norm.cdf((edges - mean) / (sigma * np.linalg.norm(u))))


def randomize_batch_norms(model, seed=0):
    """Moving statistics far from the initial (0, 1), so an unfolded or mis-folded norm shows."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.5, shape))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, shape))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, shape))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.5, shape))


def half_image():
    return np.full(SHAPE, 0.5, np.float32)
