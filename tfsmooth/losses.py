"""Per-example training losses of smoothed classifiers over k noisy copies: MACER, ADRE, consistency.

Each function takes the base classifier's logits on the k noisy copies of each example, `[B, k, K]` (copies
along their own axis, `training.SmoothingTrainer.noisy_copies`), and the labels `[B]`, and returns float32
per-example terms `[B]`; `tfsmooth.training` weights, averages and adds them. Below, F_i = softmax(f(x + delta_i))
is the base classifier's soft output on copy i and G = mean_i F_i the Monte-Carlo soft smoothed classifier.

* `macer_terms` -- MACER (Zhai et al., ICLR 2020, Sec. 3, Algorithm 1; METHODS.md §3):
  the cross-entropy of the *averaged* softmax, -log(G_y + 1e-10), and the hinge gamma - xi on the examples
  whose beta-smoothed prediction is y, xi = Phi^-1(G^beta_y) - Phi^-1(max_{c != y} G^beta_c) (G^beta: the
  mean of softmax(beta * logits)), dropping terms where xi is not finite or xi > gamma.
* `adre_terms` -- ADRE (Feng et al., AAAI 2020; METHODS.md §4): the mean cross-entropy over the copies and
  log G_c_hat, c_hat the strongest wrong class under G. The paper's own text is not at hand: this is the
  public reimplementation's form, with a floor on G_c_hat (`adre_terms`).
* `consistency_terms` -- consistency regularization (Jeong & Shin, NeurIPS 2020, Eq. (6)-(7); METHODS.md §4b):
  the mean cross-entropy over the copies, mean_i KL(G || F_i) and the entropy H(G).

All logarithms of G are computed as log-sum-exp of log-softmax outputs (no log of a rounded 0).
"""

from __future__ import annotations

import math

import tensorflow as tf

from tfsmooth import checks

MACER_CE_EPSILON = 1e-10
"""MACER's classification term is -log(G_y + 1e-10), as in the authors' code (METHODS.md §3)."""


def _checked(logits, y):
    logits = tf.convert_to_tensor(logits)
    if logits.shape.rank != 3:
        raise ValueError(f"logits must be [batch, copies, classes], got shape {logits.shape}")
    logits = tf.cast(logits, tf.float32)
    y = tf.convert_to_tensor(y)
    if y.shape.rank == 2 and y.shape[-1] == 1:  # sparse labels given as a column
        y = y[:, 0]
    if y.shape.rank != 1:
        raise ValueError(f"y must be integer labels [batch], got shape {y.shape}")
    return logits, tf.cast(y, tf.int32)


def _mean_log_softmax(log_probabilities):
    """log of the mean over axis 1 of exp(log_probabilities [B, k, K]): log G, [B, K]."""
    copies = tf.cast(tf.shape(log_probabilities)[1], tf.float32)
    return tf.reduce_logsumexp(log_probabilities, axis=1) - tf.math.log(copies)


def _mean_cross_entropy(logits, y):
    """mean_i CE(f(x + delta_i), y): [B]."""
    labels = tf.repeat(y[:, None], tf.shape(logits)[1], axis=1)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits), axis=1)


def _label_mask(y, num_classes):
    return tf.one_hot(y, num_classes, on_value=True, off_value=False, dtype=tf.bool)


def macer_terms(logits, y, beta: float = 16.0, gamma: float = 8.0):
    """MACER's two per-example terms (Zhai et al. 2020, Algorithm 1): loss_b = ce_b + lbd * sigma / 2 * hinge_b.

    Args:
        logits: float [B, k, K], the base classifier on k noisy copies x_b + delta_bi.
        y: int labels [B] (or [B, 1]).
        beta: inverse temperature of the soft smoothed classifier in the robustness term, > 0 (paper: 16).
        gamma: hinge threshold, > 0 (paper: 8).

    Returns:
        (ce, hinge, kept), float32 [B] each: ce_b = -log(G_y + 1e-10) with G the mean softmax of the copies;
        hinge_b = gamma - xi_b where kept_b (1.0), else 0, xi_b = Phi^-1(G^beta_y) - Phi^-1(max_{c != y} G^beta_c)
        (`tf.math.ndtri`); kept_b is 1 iff argmax G^beta = y (ties: lowest index), xi_b is finite and xi_b <= gamma,
        the examples the authors' code keeps.
    """
    logits, y = _checked(logits, y)
    num_classes = tf.shape(logits)[-1]
    log_g = _mean_log_softmax(tf.nn.log_softmax(logits, axis=-1))
    ce = -tf.math.log(tf.gather(tf.exp(log_g), y, batch_dims=1) + MACER_CE_EPSILON)
    g_beta = tf.reduce_mean(tf.nn.softmax(beta * logits, axis=-1), axis=1)  # [B, K]
    is_label = _label_mask(y, num_classes)
    p_y = tf.gather(g_beta, y, batch_dims=1)
    p_other = tf.reduce_max(tf.where(is_label, tf.zeros_like(g_beta), g_beta), axis=-1)
    # Which terms to keep is decided without gradient; then Phi^-1 runs on safe inputs where a term is dropped:
    # a softmax rounded to 1 or 0 gives ndtri = +-inf, whose infinite derivative times the zero gradient of the
    # dropped branch of tf.where would be NaN and poison every weight.
    xi_value = tf.stop_gradient(tf.math.ndtri(p_y) - tf.math.ndtri(p_other))
    predicted = tf.argmax(g_beta, axis=-1, output_type=tf.int32)
    kept = (predicted == y) & tf.math.is_finite(xi_value) & (xi_value <= gamma)
    xi = tf.math.ndtri(tf.where(kept, p_y, 0.75 * tf.ones_like(p_y))) - \
        tf.math.ndtri(tf.where(kept, p_other, 0.25 * tf.ones_like(p_other)))
    hinge = tf.where(kept, gamma - xi, tf.zeros_like(xi))
    return ce, hinge, tf.cast(kept, tf.float32)


def adre_terms(logits, y, floor: float = 1e-4):
    """ADRE's two per-example terms (METHODS.md §4): loss_b = ce_b + lbd * log_p_b_b.

    ce_b = mean_i CE(f(x_b + delta_bi), y_b); log_p_b_b = log max(G_c_hat, floor), c_hat = argmax_{c != y} G_c
    (the strongest wrong class of the soft smoothed classifier G, the p_B that T-CERTIFY bounds). Minimizing it
    pushes p_B down. The paper's own text is not at hand; the form is the public reimplementation's, whose
    floor 1e-10 inside the log lets the term's gradient grow to 1e10 as G_c_hat -> 0. Here the log is floored
    instead: below `floor` the term is constant (no gradient). The default 1e-4 is where pushing stops paying:
    T-CERTIFY's p_b_upper cannot go below 1 - alpha_B^(1/n), 7.6e-5 at n = 100,000 and alpha_B = 5e-4, so a p_B
    under 1e-4 already gives the largest radius any certificate at n <= 100,000 can report.

    Args:
        logits: float [B, k, K]; y: int labels [B] (or [B, 1]).
        floor: in (0, 1).

    Returns:
        (ce, log_p_b), float32 [B] each.
    """
    floor = checks.check_real(floor, "floor", 0.0, inclusive=False, maximum=1.0)
    logits, y = _checked(logits, y)
    log_g = _mean_log_softmax(tf.nn.log_softmax(logits, axis=-1))
    wrong = tf.where(_label_mask(y, tf.shape(logits)[-1]), tf.fill(tf.shape(log_g), -math.inf), log_g)
    log_p_b = tf.maximum(tf.reduce_max(wrong, axis=-1), math.log(floor))
    return _mean_cross_entropy(logits, y), log_p_b


def consistency_terms(logits, y):
    """Consistency regularization's three per-example terms (Jeong & Shin 2020; METHODS.md §4b).

    loss_b = ce_b + lbd * kl_b + eta * entropy_b, with ce_b = mean_i CE(f(x_b + delta_bi), y_b),
    kl_b = mean_i KL(G || F_i) = mean_i sum_c G_c (log G_c - log F_ic) and entropy_b = H(G) = -sum_c G_c log G_c.

    Args:
        logits: float [B, k, K]; y: int labels [B] (or [B, 1]).

    Returns:
        (ce, kl, entropy), float32 [B] each.
    """
    logits, y = _checked(logits, y)
    log_f = tf.nn.log_softmax(logits, axis=-1)
    log_g = _mean_log_softmax(log_f)
    g = tf.exp(log_g)
    kl = tf.reduce_mean(tf.reduce_sum(g[:, None] * (log_g[:, None] - log_f), axis=-1), axis=1)
    entropy = -tf.reduce_sum(g * log_g, axis=-1)
    return _mean_cross_entropy(logits, y), kl, entropy
