"""The names of tfsmooth's choices, spelled once (ground floor: no TensorFlow, cheap to import).

The library modules key their implementations by these names (`tfsmooth.attacks.SMOOTHADV_ATTACKS`,
`tfsmooth.training.METHODS`, `tfsmooth.jobs.attack`'s evaluation attacks) and check at import that
they cover exactly these (`check_covers`); the jobs
validate configurations against them and the CLI offers them as `click.Choice`s without importing
TensorFlow (so `tfsmooth --help` stays fast).
"""

SMOOTHADV_ATTACKS = ("pgd", "ddn")
"""Attacks on the smoothed soft classifier (Salman et al. 2019, Sec. 3): `attacks.smooth_adv_pgd`,
`attacks.smooth_adv_ddn`. Training (SmoothAdv) uses these."""

EVALUATION_ATTACKS = (*SMOOTHADV_ATTACKS, "base-pgd")
"""Attacks of `tfsmooth attack`: the SmoothAdv ones and vanilla l2 PGD on the base classifier
(`attacks.pgd`; the baseline of Salman et al. 2019, Sec. 4.3)."""

ESTIMATORS = ("plug_in", "stein")
"""Gradient estimators of SmoothAdv-PGD: eq. (6) by automatic differentiation, or Stein's eq. (7)."""

TRAINING_METHODS = ("gaussian", "smoothadv", "macer", "adre", "consistency")
"""Training methods: Gaussian data augmentation (Cohen et al. 2019), SmoothAdv (Salman et al. 2019), MACER (Zhai et
al. 2020), ADRE (Feng et al. 2020) and consistency regularization (Jeong & Shin 2020)."""

ARCHITECTURES = ("cifar_resnet20", "cifar_resnet56", "cifar_resnet110", "small_cnn")
"""Base classifier architectures of `tfsmooth.models.get_model`."""

CUSTOM_ARCH = "custom"
"""`tfsmooth train --arch custom --init-from my.keras`: train the architecture saved in that file."""

COMPUTE_DTYPES = ("float32", "bfloat16")
"""Arithmetic of the counting path (`tfsmooth.models.folding.InferenceView`)."""


CERTIFY_METHODS = ("cohen", "t-certify")
"""Certification rules (`tfsmooth.stats.decide_certificate`): CERTIFY of Cohen et al. 2019 (p_B = 1 - p_A) and
T-CERTIFY (Feng et al. 2020, METHODS.md §4: the runner-up bounded separately, alpha split between the two bounds)."""

ALPHA_SPLIT_AUTO = "auto"
"""`alpha_split="auto"`: T-CERTIFY's split of alpha chosen on the n0 selection draws (`tfsmooth.stats.choose_alpha_split`)."""


SPLITS = ("train", "test")
"""Data set splits (`tfsmooth.data`)."""

SMOOTHADV_REGULARIZERS = ("none", "adre", "consistency")
"""Regularizers of SmoothAdv training at the adversarial points (`tfsmooth.training.SmoothAdvConfig.regularizer`):
none (the cross-entropy of Pseudocode 1), ADRE (ADRE-ADV, Feng et al. 2020) or consistency (Jeong & Shin 2020)."""

SMOOTHADV_DEFAULTS = {"attack": "pgd", "epsilon": 0.25, "num_steps": 10, "num_noise_vec": 2, "warmup_epochs": 10,
                      "multi_noise": True, "regularizer": "none", "lbd": None, "eta": None, "floor": None}
"""The typical from-scratch CIFAR-10 run of Salman et al. 2019 (METHODS.md §2): the defaults of
`tfsmooth.training.SmoothAdvConfig` and of `tfsmooth train --method smoothadv`. lbd, eta and floor belong to
the regularizer (None: its defaults, `SMOOTHADV_REGULARIZER_DEFAULTS`)."""


MACER_DEFAULTS = {"num_noise_vec": 16, "lbd": 12.0, "gamma": 8.0, "beta": 16.0}
"""MACER's CIFAR-10 defaults at sigma = 0.25 (Zhai et al. 2020; METHODS.md §3)."""
ADRE_DEFAULTS = {"num_noise_vec": 8, "lbd": 0.1, "floor": 1e-4}
"""ADRE's defaults: k and lambda of the public reimplementation (METHODS.md §4), the floor this library's."""
CONSISTENCY_DEFAULTS = {"num_noise_vec": 2, "lbd": 20.0, "eta": 0.5}
"""Consistency regularization's defaults at sigma = 0.25 (Jeong & Shin 2020; METHODS.md §4b)."""
SMOOTHADV_REGULARIZER_DEFAULTS = {"adre": {"lbd": ADRE_DEFAULTS["lbd"], "floor": ADRE_DEFAULTS["floor"]},
                                  "consistency": {"lbd": 1.0, "eta": CONSISTENCY_DEFAULTS["eta"]}}
"""The options of each SmoothAdv regularizer and their defaults: ADRE-ADV as ADRE (METHODS.md §4); consistency on
top of SmoothAdv with lambda = 1 (Jeong & Shin 2020 use 1-2 there, METHODS.md §4b) and eta = 0.5."""
METHOD_DEFAULTS = {"smoothadv": SMOOTHADV_DEFAULTS, "macer": MACER_DEFAULTS, "adre": ADRE_DEFAULTS,
                   "consistency": CONSISTENCY_DEFAULTS}
"""The options of each training method that has some, with their defaults (`tfsmooth train`)."""


def check_covers(implemented, names, what: str) -> None:
    """Raises AssertionError (at import of the implementing module) unless it implements exactly `names`."""
    if tuple(sorted(implemented)) != tuple(sorted(names)):
        raise AssertionError(f"{what} implements {sorted(implemented)}, tfsmooth.registry names {sorted(names)}")
