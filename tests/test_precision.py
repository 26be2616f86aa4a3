"""compute_dtype="bfloat16": the counting path's bfloat16 view of a base classifier (library, export, CLI)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

import fixtures
from tfsmooth import SmoothedClassifier, export, models
from tfsmooth.cli.main import cli
from tfsmooth.models import folding


@pytest.fixture(scope="module")
def resnet():
    keras.utils.set_random_seed(0)
    model = models.cifar_resnet(20)
    fixtures.randomize_batch_norms(model)
    return model


def test_bfloat16_view_computes_in_bfloat16_and_returns_float32_scores(resnet):
    view = folding.InferenceView(resnet, "bfloat16")
    x = np.random.default_rng(1).random((8, 32, 32, 3), dtype=np.float32)
    # Every layer but the input normalization and the output layer computes in bfloat16; those two in float32.
    policies = {layer.name: layer.dtype_policy.name for layer in view.model.layers
                if not isinstance(layer, (keras.layers.InputLayer, folding._FoldedConvBatchNorm, folding._Passthrough))}
    assert policies.pop("logits") == "float32"
    assert policies.pop("normalize") == "float32"
    assert set(policies.values()) == {"mixed_bfloat16"}
    assert sum(isinstance(layer, folding._FoldedConvBatchNorm) for layer in view.model.layers) == 21
    # The folded convolutions run on bfloat16 activations (they compute in their input's dtype).
    probe = keras.Model(view.model.inputs[0], view.model.get_layer("stage3_block3_conv2_folded").output)
    assert probe(x, training=False).dtype == tf.bfloat16
    got = view.model(x, training=False)
    want = resnet(x, training=False).numpy()
    assert got.dtype == tf.float32
    err = np.abs(got.numpy() - want).max() / np.abs(want).max()
    # bfloat16 keeps 8 significant bits (relative rounding 2**-9 = 0.2 %); through 20 layers the logits move by
    # a few percent of their scale, but not by more: a wrong fold or a wrong cast would be off by O(1).
    assert 1e-4 < err < 0.05, err  # > 1e-4: not float32 (float32 folding agrees to ~1e-6)


def test_bfloat16_view_normalizes_noisy_pixels_in_float32(resnet):
    view = folding.InferenceView(resnet, "bfloat16")
    # Noisy pixels x + delta, almost none of them representable in bfloat16 (8 significant bits).
    x = np.clip(0.5 + 0.25 * np.random.default_rng(2).normal(size=(4, 32, 32, 3)), 0, 1).astype(np.float32)
    assert view.model.inputs[0].dtype == "float32"
    # Each layer called on its own (it casts its input to its compute dtype, as inside the model).
    normalized = view.model.get_layer("normalize")(x)
    assert normalized.dtype == tf.float32
    np.testing.assert_array_equal(normalized, resnet.get_layer("normalize")(x))  # the float32 normalization
    # The first convolution rounds the normalized tensor to bfloat16 itself, not the pixels before it.
    assert view.model.get_layer("stem_conv_folded")(normalized).dtype == tf.bfloat16
    pre_rounded = tf.cast(tf.cast(x, tf.bfloat16), tf.float32)
    assert np.abs(view.model(x, training=False).numpy() - view.model(pre_rounded, training=False).numpy()).max() > 0


def test_bfloat16_view_keeps_layers_before_the_first_trainable_layer_in_float32():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="rescale")(inputs)
    x = keras.layers.ZeroPadding2D(1, name="pad")(x)
    x = keras.layers.Conv2D(3, 3, name="conv")(x)
    x = keras.layers.Rescaling(0.5, name="late_rescale")(keras.layers.ReLU(name="relu")(x))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Flatten(name="flat")(x)))
    policies = {layer.name: layer.dtype_policy.name for layer in folding.InferenceView(model, "bfloat16").model.layers
                if not isinstance(layer, keras.layers.InputLayer)}
    assert policies == {"rescale": "float32", "pad": "float32", "conv": "mixed_bfloat16", "relu": "mixed_bfloat16",
                        "late_rescale": "mixed_bfloat16", "flat": "mixed_bfloat16", "out": "float32"}


def test_bfloat16_view_does_not_fold_what_fails_the_float32_check(monkeypatch):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    y = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(3, 3, padding="same", name="conv")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(y)))
    fixtures.randomize_batch_norms(model)
    assert any(isinstance(layer, folding._FoldedConvBatchNorm)
               for layer in folding.InferenceView(model, "bfloat16").model.layers)
    monkeypatch.setattr(folding._FoldedConvBatchNorm, "call", lambda self, x, training=None: self.conv(x))  # broken
    with pytest.warns(RuntimeWarning, match="using the unfolded model"):
        view = folding.InferenceView(model, "bfloat16")
    assert not any(isinstance(layer, folding._FoldedConvBatchNorm) for layer in view.model.layers)
    x = np.random.default_rng(0).random((4, 6, 6, 2), dtype=np.float32)
    np.testing.assert_allclose(view.model(x, training=False), model(x, training=False), rtol=0.03, atol=0.03)


def test_bfloat16_view_copies_weights_and_follows_them_after_sync():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 6, 2))
    z = keras.layers.Conv2D(3, 3, padding="same", use_bias=False)(inputs)
    y = keras.layers.BatchNormalization()(z)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(y)))
    view = folding.InferenceView(model, "bfloat16")
    assert not {id(v) for v in view.model.weights} & {id(v) for v in model.weights}  # copies, not shared
    x = np.random.default_rng(0).random((4, 6, 6, 2), dtype=np.float32)
    np.testing.assert_allclose(view.model(x, training=False), model(x, training=False), rtol=0.03, atol=0.03)
    model.set_weights([w * 3.0 + 0.5 for w in model.get_weights()])
    stale = view.model(x, training=False).numpy()
    assert np.abs(stale - model(x, training=False).numpy()).max() > 0.5
    view.sync()
    np.testing.assert_allclose(view.model(x, training=False), model(x, training=False), rtol=0.03, atol=0.1)


def test_float32_view_is_the_folded_model_sharing_variables(resnet):
    view = folding.InferenceView(resnet)
    assert view.compute_dtype == "float32"
    assert {id(v) for v in view.model.weights} == {id(v) for v in resnet.weights}


def test_smoothed_classifier_in_bfloat16_certifies_constant_classifier_exactly():
    smoothed = SmoothedClassifier(fixtures.constant_classifier(3, 10), 10, 0.5, compute_dtype="bfloat16")
    cert = smoothed.certify(fixtures.half_image(), n0=10, n=500, alpha=0.01, batch_size=200, seed=0)
    assert cert.label == 3 and cert.counts[3] == 500
    assert cert.p_a_lower == pytest.approx(0.01 ** (1 / 500), rel=1e-12)


def test_smoothed_classifier_in_bfloat16_is_seeded_and_follows_later_training():
    base = fixtures.tied_classifier()
    smoothed = SmoothedClassifier(base, 2, 0.25, compute_dtype="bfloat16")
    images = np.stack([fixtures.half_image()] * 2)
    first = smoothed.sample_counts(images, 1000, 300, seed=5)
    np.testing.assert_array_equal(first, smoothed.sample_counts(images, 1000, 700, seed=5))
    assert 400 < first[0, 0] < 600  # P(class 0) = 1/2 at the boundary
    # Retrain the base model after constructing the smoothed classifier: now always class 1.
    kernel, _ = base.layers[-1].get_weights()
    base.layers[-1].set_weights([np.zeros_like(kernel), np.array([0.0, 1.0], np.float32)])
    assert smoothed.predict(fixtures.half_image(), n=100, alpha=0.001, batch_size=100, seed=1) == 1
    assert smoothed.certify(fixtures.half_image(), 10, 100, 0.001, 100, seed=1).counts.tolist() == [0, 100]


def _with_bfloat16_hidden_layer(model):
    """A fixtures classifier (Flatten + Dense) with an identity Dense layer before its output layer.

    In a bfloat16 view the fixtures' own layers all stay float32 (preprocessing and output layer), so they
    would compute exactly as in float32. The hidden layer computes in bfloat16: with identity weights its
    output is x + delta rounded to bfloat16 (one exact product per output), then the float32 output layer.
    """
    inputs = keras.Input(fixtures.SHAPE)
    hidden = keras.layers.Dense(fixtures.D, name="hidden")
    head = keras.layers.Dense(model.layers[-1].units, name="head")
    wrapped = keras.Model(inputs, head(hidden(keras.layers.Flatten()(inputs))))
    hidden.set_weights([np.eye(fixtures.D, dtype=np.float32), np.zeros(fixtures.D, np.float32)])
    head.set_weights(model.layers[-1].get_weights())
    return wrapped


def test_bfloat16_counts_match_float32_on_a_trained_like_linear_classifier():
    # A clear margin: float32 and bfloat16 classifiers agree on (almost) every draw, so both certify the same
    # label with similar counts; not equal in general, since the hidden layer rounds x + delta to bfloat16.
    w = np.random.default_rng(0).normal(size=fixtures.D)
    x = fixtures.half_image()
    b = 2.0 * 0.25 * np.linalg.norm(w) - float(w @ x.reshape(-1))  # p_A = Phi(2) = 0.977
    base = _with_bfloat16_hidden_layer(fixtures.linear_classifier(w, b))
    c32 = SmoothedClassifier(base, 2, 0.25).certify(x, 20, 2000, 0.001, 1000, seed=2)
    c16 = SmoothedClassifier(base, 2, 0.25, compute_dtype="bfloat16").certify(x, 20, 2000, 0.001, 1000, seed=2)
    assert c32.label == c16.label == 1
    assert abs(int(c32.counts[1]) - int(c16.counts[1])) <= 10


@pytest.mark.parametrize("compute_dtype", ["float16", "bf16", None, "FLOAT32"])
def test_unknown_compute_dtype_is_refused_naming_it(compute_dtype):
    with pytest.raises(ValueError, match="compute_dtype must be one of float32, bfloat16"):
        SmoothedClassifier(fixtures.constant_classifier(), 10, 0.25, compute_dtype=compute_dtype)


def test_bfloat16_needs_a_functional_model():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(keras.layers.Flatten()(x))

    net = Net()
    net(np.zeros((1, 4, 4, 1), np.float32))
    with pytest.raises(ValueError, match="compute_dtype='bfloat16' needs a functional or Sequential"):
        SmoothedClassifier(net, 2, 0.25, compute_dtype="bfloat16")
    SmoothedClassifier(net, 2, 0.25)  # float32 takes any model


def test_bfloat16_export_reproduces_library_counts(tmp_path):
    # The tied classifier at its boundary: the bfloat16 hidden layer rounds x + delta and flips some draws, so
    # bfloat16 and float32 counts differ, and the export must reproduce the bfloat16 ones.
    model = _with_bfloat16_hidden_layer(fixtures.tied_classifier())
    images = np.stack([fixtures.half_image()] * 4)
    lib = SmoothedClassifier(model, 2, 0.25, noise_block=50, compute_dtype="bfloat16")
    certs = lib.certify_batch(images, 20, 1000, 0.001, 200, seed=9)
    loaded = tf.saved_model.load(export.export_smoothed(lib, str(tmp_path / "m"), n0=20, n=1000, alpha=0.001, batch_size=200))
    out = loaded.signatures["certify"](images=tf.constant(images), seed=tf.constant(9, tf.int64))
    np.testing.assert_array_equal(out["counts"].numpy(), np.stack([c.counts for c in certs]))
    np.testing.assert_array_equal(out["label"].numpy(), [c.label for c in certs])
    assert loaded.signatures["metadata"]()["compute_dtype"].numpy() == b"bfloat16"
    c32 = SmoothedClassifier(model, 2, 0.25, noise_block=50).certify_batch(images, 20, 1000, 0.001, 200, seed=9)
    assert any((a.counts != b.counts).any() for a, b in zip(certs, c32))


CERTIFY = ["certify", "--dataset", "cifar10_sample", "--sigma", "0.25", "--n0", "20", "--n", "200",
           "--batch", "200", "--skip", "250", "--seed", "4"]


def test_cli_certify_in_bfloat16_records_it_and_refuses_to_resume_in_float32(tmp_path):
    model_file = tmp_path / "base.keras"
    keras.utils.set_random_seed(0)
    models.small_cnn(10).save(model_file)
    out = tmp_path / "cert.tsv"
    runner = CliRunner()
    done = runner.invoke(cli, CERTIFY + [str(model_file), "--out", str(out), "--compute-dtype", "bfloat16",
                                         "--max", "300"])
    assert done.exit_code == 0, done.output
    rows = out.read_text().splitlines()
    assert len(rows) == 3 and rows[0].split("\t") == ["idx", "label", "predict", "radius", "correct", "time"]
    assert '"compute_dtype": "bfloat16"' in (tmp_path / "cert.tsv.json").read_text()
    refused = runner.invoke(cli, CERTIFY + [str(model_file), "--out", str(out)])
    assert refused.exit_code != 0 and "other parameters" in refused.output and "Traceback" not in refused.output
    assert out.read_text().splitlines() == rows
    bad = runner.invoke(cli, CERTIFY + [str(model_file), "--out", str(tmp_path / "x.tsv"), "--compute-dtype", "fp8"])
    assert bad.exit_code != 0 and "--compute-dtype" in bad.output and not (tmp_path / "x.tsv").exists()
