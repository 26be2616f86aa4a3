"""Whole jobs behind the command line, one module per job (the floor between the CLI and the library).

* `tfsmooth.jobs.train`: train a base classifier (Gaussian augmentation, SmoothAdv), resumable.
* `tfsmooth.jobs.evaluate`: CERTIFY / PREDICT over a data set, the field's TSV, resumable.
* `tfsmooth.jobs.samplewise`: sample-wise (transductive) certification: sigma per image, then the allocation.
* `tfsmooth.jobs.attack`: attack each image, then PREDICT at the attacked point (empirical robustness).
* `tfsmooth.jobs.self_training`: a teacher's pseudo-labels for self-training.
* `tfsmooth.jobs.records`: run records stored beside results and checked on resume.

Each job takes a frozen, validated configuration, saves it as JSON beside its outputs so a run can be
reproduced from them, writes results as it goes, and resumes from what it already wrote. The names
below are re-exported here for convenience (`from tfsmooth import jobs; jobs.certify_dataset(...)`);
`jobs.train` is the training module, whose `train(config, outdir)` runs the job.
"""

from tfsmooth.jobs.attack import ATTACKS, AttackConfig, attack_dataset
from tfsmooth.jobs.evaluate import CertifyConfig, certify_dataset, predict_dataset, selected_count
from tfsmooth.jobs.merge import merge_results
from tfsmooth.jobs.records import NOISE_SCHEME
from tfsmooth.jobs.samplewise import (AssignSigmaConfig, assign_sigma, certify_samplewise_dataset, load_sigma_file,
                                      unallocated_path)
from tfsmooth.jobs.self_training import (PSEUDO_LABEL_KEYS, PseudoLabelConfig, load_pseudo_labels, parse_source,
                                         pseudo_label)
from tfsmooth.jobs import train  # the module: `jobs.train.train(config, outdir)` runs it
from tfsmooth.jobs.train import (BASE_MODEL_FILE, CHECKPOINT_FILE, CONFIG_FILE, LOG_FILE, METHODS, SMOOTHADV_DEFAULTS,
                                 STATE_FILE, TrainConfig)
from tfsmooth.models.io import load_base_model

__all__ = ["ATTACKS", "AttackConfig", "attack_dataset", "CertifyConfig", "certify_dataset", "predict_dataset",
           "selected_count", "certify_samplewise_dataset", "unallocated_path", "AssignSigmaConfig",
           "assign_sigma", "load_sigma_file", "merge_results", "NOISE_SCHEME", "PSEUDO_LABEL_KEYS", "PseudoLabelConfig", "load_pseudo_labels",
           "parse_source", "pseudo_label", "BASE_MODEL_FILE", "CHECKPOINT_FILE", "CONFIG_FILE", "LOG_FILE",
           "METHODS", "SMOOTHADV_DEFAULTS", "STATE_FILE", "TrainConfig", "train", "load_base_model"]
