"""Empirical robustness: attack each selected image, then PREDICT at the attacked point.

Salman et al. 2019, Sec. 4 (the definition of empirical robust accuracy) and Sec. 4.3 (the attacks);
METHODS.md §2. One row per image, `idx label predict basePredict correct time`, resumable
(`tfsmooth.jobs.evaluate.evaluate`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfsmooth import attacks, checks, data, noise, registry, results, stats
from tfsmooth.jobs import records
from tfsmooth.jobs.evaluate import check_evaluation_fields, evaluate
from tfsmooth.smoothing import SmoothedClassifier

ATTACKS = registry.EVALUATION_ATTACKS
"""`attack_dataset`'s attacks: the SmoothAdv ones and vanilla PGD on the base classifier."""


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """Configuration of `attack_dataset`: SmoothAdv attack, then PREDICT at the attacked point.

    Salman et al. 2019, Sec. 4 (the definition of empirical robust accuracy; Sec. 4.3 studies the attack;
    METHODS.md §2).

    Attributes:
        model, dataset, split, data_dir, skip, max, seed, batch: as in `CertifyConfig` (batch: PREDICT's
            noisy copies per forward pass; not part of the run record).
        sigma: noise level of the smoothed classifier (l2, [0, 1] pixel scale), also the attack's.
        attack: "pgd" (`attacks.smooth_adv_pgd`), "ddn" (`attacks.smooth_adv_ddn`) or "base-pgd"
            (`attacks.pgd`: vanilla l2 PGD on the base classifier without noise, the weaker attack
            SmoothAdv is compared with in Salman et al. 2019, Sec. 4.3).
        epsilon: l2 radius of the attack ([0, 1] pixel scale), >= 0.
        num_steps: attack steps T (20 in the paper's evaluation).
        num_noise_vec: noise draws m of estimator (6) (m_test: 1 to 128); unused by "base-pgd".
        estimator: "plug_in" (eq. (6)) or "stein" (eq. (7); pgd only).
        gamma, init_norm: DDN's norm update factor in (0, 1) and initial norm (> 0; None: epsilon), as
            in `attacks.smooth_adv_ddn`; ddn only (the reference evaluation code tunes both).
        n, alpha: draws and failure probability of PREDICT at the attacked point.
        attack_batch: images attacked together (each step's forward pass holds attack_batch * m noisy
            copies). Consecutive selected images are grouped in fixed groups, so a resumed run
            regroups them exactly as an uninterrupted one. Rows do not depend on it except through
            floating-point rounding of batched kernels; not part of the run record.
        shard: as in `CertifyConfig` (a shard groups its own images, so its rows equal the unsharded
            run's up to the same batched rounding as `attack_batch`).
    """

    model: str
    dataset: str = "cifar10"
    split: str = "test"
    sigma: float = 0.25
    attack: str = "pgd"
    epsilon: float = 0.5
    num_steps: int = 20
    num_noise_vec: int = 32
    estimator: str = "plug_in"
    n: int = 1000
    alpha: float = 0.001
    batch: int = 1000
    skip: int = 1
    max: int = -1
    seed: int = 0
    data_dir: Optional[str] = None
    attack_batch: int = 8
    gamma: float = attacks.DDN_GAMMA
    init_norm: Optional[float] = None
    shard: Tuple[int, int] = (0, 1)

    def __post_init__(self):
        check_evaluation_fields(self)
        for name in ("num_steps", "num_noise_vec", "attack_batch"):
            checks.check_count(getattr(self, name), name)
        checks.check_choice(self.attack, "attack", ATTACKS)
        checks.check_epsilon(self.epsilon)
        if self.estimator not in registry.ESTIMATORS or (self.estimator == "stein" and self.attack != "pgd"):
            raise ValueError(f"estimator must be one of {', '.join(registry.ESTIMATORS)} ('stein' with attack 'pgd' "
                             f"only); got {self.estimator!r} with attack {self.attack!r}")
        if self.attack != "ddn" and (self.gamma != attacks.DDN_GAMMA or self.init_norm is not None):
            raise ValueError(f"gamma and init_norm apply to attack 'ddn' only, got gamma={self.gamma!r}, "
                             f"init_norm={self.init_norm!r} with attack {self.attack!r}")
        checks.check_real(self.gamma, "gamma", 0.0, inclusive=False, maximum=1.0)
        checks.check_optional(self.init_norm, checks.check_real, "init_norm", 0.0, inclusive=False,
                              unit="l2, pixels in [0, 1]")

    def run_record(self) -> dict:
        """What identifies the run's results (stored beside the TSV; a resume must match it)."""
        record = records.run_record(self, "attack", ["attack_batch", "batch"] + (["shard"] if self.shard[1] == 1 else []))
        if "shard" in record:
            record["shard"] = list(record["shard"])
        return record


def attack_dataset(config: AttackConfig, out: str, *, on_row: Optional[Callable[[dict], None]] = None,
                   restart: bool = False) -> int:
    """Attacks every `skip`-th example below `max`, then runs PREDICT at the attacked point.

    One flushed row per example: `idx label predict basePredict correct time` (basePredict: the
    base classifier's class at the attacked point, without noise; correct: PREDICT == label, so
    abstentions count as wrong; time: the image's share of its attack group's time plus its PREDICT
    seconds, `Prediction.seconds`). The mean of `correct` is
    the empirical robust accuracy (`tfsmooth.analysis`). The attack's m draws for example idx are
    stream `tfsmooth.noise.STREAM_ATTACK` under (seed, idx), PREDICT's are its own
    stream: a row depends only on the configuration and idx, so a resumed run gives the same rows.

    Returns:
        The number of rows written by this call.

    Raises:
        ValueError / FileNotFoundError: as `certify_dataset` (n too small to ever predict at this
            alpha, missing model or data, an `out` from another configuration); `out` untouched.
    """
    minimum = stats.min_n_to_predict(config.alpha)
    if config.n < minimum:
        raise ValueError(f"n={config.n} is too small to ever predict at alpha={config.alpha}: use n >= {minimum}")
    info = data.dataset_info(config.dataset, config.data_dir)
    base, record = records.load_recorded_model(config, config.run_record)
    num_classes = records.check_model_fits_data(base, info, f"model {config.model}")
    smoothed = SmoothedClassifier(base, num_classes, config.sigma)
    attack_batch = _attack_function(base, config, info.image_shape)

    def prepare(images, labels, idxs):
        x_adv, base_predict = attack_batch(np.stack(images), np.asarray(labels, np.int64), np.asarray(idxs, np.int64))
        return list(x_adv.numpy()), [{"basePredict": int(p)} for p in base_predict.numpy()]

    answers = functools.partial(smoothed.iter_predict, n=config.n, alpha=config.alpha, batch_size=config.batch,
                                seed=config.seed)
    return evaluate(config, results.ATTACK_COLUMNS, record, answers, out, on_row, prepare,
                     prepare_group=config.attack_batch, restart=restart)


def _attack_function(base, config: AttackConfig, image_shape):
    """Compiled (images [B, H, W, C], labels [B], idxs [B]) -> (x_adv [B, H, W, C], base classes at x_adv [B]).

    Example idx gets its m draws from block 0 and its attack seed (random directions) from block 1 of
    stream `noise.STREAM_ATTACK` under (config.seed, idx), whatever else is in the batch.
    """
    spec = [tf.TensorSpec([None, *image_shape], tf.float32), tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None], tf.int64)]

    @tf.function(input_signature=spec)
    def attack_batch(images, labels, idxs):
        draw_seeds = noise.block_seeds(config.seed, idxs, noise.STREAM_ATTACK, tf.zeros_like(idxs))
        step_seeds = noise.block_seeds(config.seed, idxs, noise.STREAM_ATTACK, tf.ones_like(idxs))
        draws = tf.map_fn(
            lambda s: tf.random.stateless_normal([config.num_noise_vec, *image_shape], seed=s, stddev=config.sigma),
            draw_seeds, fn_output_signature=tf.float32)
        arguments = dict(epsilon=config.epsilon, num_steps=config.num_steps, seed=step_seeds)
        x_adv = _EVALUATION_ATTACKS[config.attack](base, images, labels, draws, config, arguments)
        return x_adv, tf.argmax(base(x_adv, training=False), axis=1)

    return attack_batch


_EVALUATION_ATTACKS = {
    "pgd": lambda base, x, y, draws, config, arguments: attacks.SMOOTHADV_ATTACKS["pgd"](
        base, x, y, draws, estimator=config.estimator, **arguments),
    "ddn": lambda base, x, y, draws, config, arguments: attacks.SMOOTHADV_ATTACKS["ddn"](
        base, x, y, draws, gamma=config.gamma, init_norm=config.init_norm, **arguments),
    "base-pgd": lambda base, x, y, draws, config, arguments: attacks.pgd(base, x, y, **arguments),
}
"""How `attack_dataset` calls each attack of `registry.EVALUATION_ATTACKS` with its own options (the m
draws are unused by "base-pgd": vanilla PGD on the base classifier, without noise)."""
registry.check_covers(_EVALUATION_ATTACKS, registry.EVALUATION_ATTACKS, "tfsmooth.jobs.attack._EVALUATION_ATTACKS")

