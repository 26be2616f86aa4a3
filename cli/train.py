"""`tfsmooth train`: train a base classifier (Gaussian augmentation, SmoothAdv, MACER, ADRE, consistency)."""

from __future__ import annotations

import click

from tfsmooth import registry
from tfsmooth.cli._common import (ARCHITECTURE, COUNT, NON_NEGATIVE, NON_NEGATIVE_REAL, POSITIVE, SMOOTHADV_ATTACK,
                                  TRAINING_METHOD, library_errors, quiet_tensorflow)


DEFAULTS = registry.SMOOTHADV_DEFAULTS
MACER, ADRE, CONSISTENCY = registry.MACER_DEFAULTS, registry.ADRE_DEFAULTS, registry.CONSISTENCY_DEFAULTS
SA_REG = registry.SMOOTHADV_REGULARIZER_DEFAULTS
METHOD_OPTIONS = sorted({name for defaults in registry.METHOD_DEFAULTS.values() for name in defaults})
"""The fields of every method's config: the options `train` hands to `jobs.train.method_config_for`."""


def _smoothadv_options(function):
    """--method, the SmoothAdv options (`training.SmoothAdvConfig`, in TrainConfig.method_config) and the
    fine-tuning and self-training options (jobs.TrainConfig fields)."""
    options = [
        click.option("--method", type=TRAINING_METHOD, default="gaussian", show_default=True,
                     help="gaussian: Gaussian data augmentation (Cohen et al.); smoothadv: SmoothAdv adversarial "
                          "training (Salman et al. 2019); macer: MACER (Zhai et al. 2020); adre: ADRE (Feng et al. "
                          "2020); consistency: consistency regularization (Jeong & Shin 2020)."),
        click.option("--attack", type=SMOOTHADV_ATTACK, default=None,
                     help=f"[smoothadv] SmoothAdv attack (default {DEFAULTS['attack']})."),
        click.option("--epsilon", type=NON_NEGATIVE_REAL, default=None,
                     help=f"[smoothadv] l2 attack radius, pixels in [0, 1] (default {DEFAULTS['epsilon']})."),
        click.option("--num-steps", type=COUNT, default=None, help=f"[smoothadv] attack steps T (default {DEFAULTS['num_steps']})."),
        click.option("--num-noise-vec", type=COUNT, default=None,
                     help=f"[smoothadv] noise draws m per image, for the attack and the loss (default "
                          f"{DEFAULTS['num_noise_vec']}); [macer, adre, consistency] noisy copies k (m) per image "
                          f"(defaults {MACER['num_noise_vec']}, {ADRE['num_noise_vec']}, "
                          f"{CONSISTENCY['num_noise_vec']})."),
        click.option("--regularizer", type=click.Choice(registry.SMOOTHADV_REGULARIZERS), default=None,
                     help="[smoothadv] loss at the adversarial copies, on the attack's m draws: none (cross-entropy), "
                          "adre (ADRE-ADV, Feng et al. 2020) or consistency (Jeong & Shin 2020); default none."),
        click.option("--lbd", type=NON_NEGATIVE_REAL, default=None,
                     help=f"[macer, adre, consistency] weight lambda of the regularizer (defaults {MACER['lbd']}, "
                          f"{ADRE['lbd']}, {CONSISTENCY['lbd']}; the papers' at sigma = 0.25); [smoothadv with "
                          f"--regularizer] its lambda (defaults {SA_REG['adre']['lbd']}, "
                          f"{SA_REG['consistency']['lbd']})."),
        click.option("--gamma", type=POSITIVE, default=None,
                     help=f"[macer] hinge threshold gamma (default {MACER['gamma']})."),
        click.option("--beta", type=POSITIVE, default=None,
                     help=f"[macer] inverse temperature beta of the robustness term (default {MACER['beta']})."),
        click.option("--eta", type=NON_NEGATIVE_REAL, default=None,
                     help=f"[consistency, smoothadv --regularizer consistency] weight eta of the entropy term (default {CONSISTENCY['eta']})."),
        click.option("--floor", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=None,
                     help=f"[adre, smoothadv --regularizer adre] floor of p_B inside ADRE's log (default {ADRE['floor']})."),
        click.option("--warmup", "warmup_epochs", type=COUNT, default=None,
                     help=f"[smoothadv] epochs of the linear epsilon warm-up; 1 = none (default {DEFAULTS['warmup_epochs']})."),
        click.option("--multi-noise/--no-multi-noise", default=None,
                     help="[smoothadv] train on all m noisy copies of each attacked image, or on one "
                          f"(default: {'all' if DEFAULTS['multi_noise'] else 'one'})."),
        click.option("--init-from", type=click.Path(dir_okay=False), default=None,
                     help="Start from this .keras model (pre-trained elsewhere, or your own architecture saved "
                          "untrained); a new head replaces the last Dense layer if its class count differs. --arch "
                          "names its architecture: one of tfsmooth's, or 'custom' for your own."),
        click.option("--unlabeled", default=None, metavar="DATASET[:train]",
                     help="Self-training: also train on these images with the labels of --pseudo-labels."),
        click.option("--pseudo-labels", type=click.Path(dir_okay=False), default=None,
                     help="Self-training: .npz written by `tfsmooth pseudo-label` for --unlabeled."),
        click.option("--self-training-weight", type=POSITIVE, default=None,
                     help="Self-training: weight of the pseudo-labeled examples' loss (default 1.0)."),
        click.option("--restart", is_flag=True, default=False,
                     help="Delete the run's files in OUTDIR and start over instead of resuming."),
        click.option("--train-examples", type=NON_NEGATIVE, default=0, show_default=True,
                     help="Use only the first this many labeled training images (0: all)."),
        click.option("--sigma-file", type=click.Path(dir_okay=False), default=None,
                     help="Sample-wise fine-tuning: .npz of `tfsmooth assign-sigma`; each training image gets its "
                          "own noise level (--sigma then applies to the validation images only)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@click.command()
@click.option("--dataset", default="cifar10", show_default=True,
              help="cifar10, cifar10_sample (embedded), mnist, tfds:NAME (a tensorflow-datasets "
              "image classification set) or a path to a .npz of x_train, y_train, x_test, y_test.")
@click.option("--arch", type=ARCHITECTURE, default="cifar_resnet20", show_default=True,
              help="Architecture; 'custom' with --init-from trains the model saved in that file.")
@click.option("--sigma", type=POSITIVE, default=0.25, show_default=True,
              help="Gaussian augmentation noise level (l2, pixels in [0, 1]).")
@click.option("--epochs", type=COUNT, default=90, show_default=True)
@click.option("--batch", type=COUNT, default=256, show_default=True)
@click.option("--lr", type=POSITIVE, default=0.1, show_default=True, help="Initial SGD learning rate.")
@click.option("--lr-step", type=COUNT, default=30, show_default=True, help="Multiply the rate by 0.1 every this many epochs.")
@click.option("--momentum", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.9, show_default=True)
@click.option("--weight-decay", type=NON_NEGATIVE_REAL, default=1e-4, show_default=True, help="Coupled L2 weight decay.")
@click.option("--val-examples", type=NON_NEGATIVE, default=1000, show_default=True,
              help="Test examples evaluated under noise after each epoch (0: none).")
@click.option("--outdir", type=click.Path(file_okay=False), required=True,
              help="Run directory; rerunning on it resumes from the last finished epoch.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="cifar10: CIFAR-10 binary directory (default $TFSMOOTH_DATA_DIR, else tfds); mnist: idx "
              "files directory (default $TFSMOOTH_MNIST_DIR, else tfds); tfds:NAME: tfds's data directory.")
@click.option("--seed", type=NON_NEGATIVE, default=0, show_default=True)
@click.option("--augment", type=click.Choice(["auto", "crop_flip", "crop", "none"]), default="auto",
              show_default=True,
              help="Training augmentation: random crop after padding 4 (+ horizontal flip); auto: crop_flip for "
              "colour images, none for single-channel ones (MNIST digits).")
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multi-worker"]), default="default",
              show_default=True,
              help="tf.distribute strategy: one device; mirrored: all local GPUs (else the CPU); multi-worker: the "
              "cluster of $TF_CONFIG (run the same command on every worker, OUTDIR on a shared file system; only "
              "the chief writes it). --batch is the global batch, split among the replicas.")
@_smoothadv_options
def train(dataset, arch, sigma, epochs, batch, lr, lr_step, momentum, weight_decay, val_examples, outdir,
          data_dir, seed, augment, strategy, **smoothadv):
    """Train a base classifier under Gaussian noise (Cohen et al. 2019, Sec. 3.3), by SmoothAdv, MACER, ADRE or
    consistency regularization.

    With --method smoothadv, each batch is attacked (SmoothAdv-PGD or -DDN, radius --epsilon,
    --num-steps steps, --num-noise-vec noise draws) and the model trains on Gaussian copies of the
    attacked images (Salman et al. 2019, Pseudocode 1); --regularizer adre|consistency
    replaces its cross-entropy by that method's loss at the adversarial copies. macer, adre and consistency train on
    --num-noise-vec Gaussian copies of each image with their regularized losses (weight --lbd);
    log.csv gets one column per loss term.

    Writes OUTDIR/base_model.keras (what `certify` takes), config.json, log.csv (one row per
    epoch) and a checkpoint after every epoch.
    """
    quiet_tensorflow()
    from tfsmooth import jobs

    method_options = {name: smoothadv.pop(name) for name in METHOD_OPTIONS}
    restart = smoothadv.pop("restart")
    with library_errors():
        method = smoothadv.pop("method")
        config = jobs.TrainConfig(dataset=dataset, arch=arch, sigma=sigma, epochs=epochs, batch=batch, lr=lr,
                                  lr_step=lr_step, momentum=momentum, weight_decay=weight_decay, seed=seed,
                                  data_dir=data_dir, val_examples=val_examples, method=method, augment=augment,
                                  method_config=jobs.train.method_config_for(method, **method_options), **smoothadv)
        done = 0 if restart else jobs.train.epochs_done(outdir)
        if done >= epochs:
            click.echo(f"nothing to do: {outdir} already holds {done} of {epochs} epochs (raise --epochs to train on, "
                       "or --restart to start over)")
        from tfsmooth import distribute

        jobs.train.train(config, outdir, verbose=1 if click.get_text_stream("stdout").isatty() else 2,
                         restart=restart, strategy=distribute.make_strategy(strategy))
    click.echo(f"base classifier: {outdir}/{jobs.BASE_MODEL_FILE}")
