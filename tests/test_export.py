"""Tests for tfsmooth.export: SavedModel signatures, TF Serving requests (statistics: test_graph_stats.py).

One export of a tiny base classifier (small_cnn on 8x8x3 images, K = 4) is shared by the module.
Its noise settings make every path of the counting loop run: noise_block = 16 and batch_size = 160
give 10 blocks per forward pass; CERTIFY draws n0 = 20 (blocks of 16 + 4) and n = 100 (6 x 16 + 4),
9 blocks per image, so 5 images need 45 blocks = 4 full passes and one padded pass (5 real blocks);
PREDICT needs 7 blocks per image, 35 = 3 full passes and one padded pass. A single image (9 or 7
blocks) is less than one pass: the export runs it unpadded, the library pads it to 10 blocks.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from tfsmooth import export, models
from tfsmooth.smoothing import SmoothedClassifier

SIGMA, N0, N, ALPHA, BATCH, BLOCK, SEED = 0.25, 20, 100, 0.01, 160, 16, 11
SIGNATURE_INPUTS = {"serving_default": {"images", "seed"}, "certify": {"images", "seed"},
                    "t_certify": {"images", "seed"}, "base_logits": {"images"}, "metadata": set()}
# The outputs of the module docstring and the README's signature table: (dtype, shape), B = None, K = 4.
SIGNATURE_OUTPUTS = {
    "serving_default": {"label": (tf.int64, [None]), "counts": (tf.int64, [None, 4]),
                        "p_value": (tf.float64, [None]), "seed": (tf.int64, [None])},
    "certify": {"label": (tf.int64, [None]), "radius": (tf.float64, [None]), "p_a_lower": (tf.float64, [None]),
                "counts": (tf.int64, [None, 4]), "selection_counts": (tf.int64, [None, 4]),
                "seed": (tf.int64, [None])},
    "t_certify": {"label": (tf.int64, [None]), "radius": (tf.float64, [None]), "p_a_lower": (tf.float64, [None]),
                  "p_b_upper": (tf.float64, [None]), "runner_up": (tf.int64, [None]),
                  "counts": (tf.int64, [None, 4]), "selection_counts": (tf.int64, [None, 4]),
                  "seed": (tf.int64, [None])},
    "base_logits": {"logits": (tf.float32, [None, 4])},
}
METADATA_OUTPUTS = {"sigma", "n0", "n", "alpha", "noise_block", "batch_size", "num_classes", "image_shape",
                    "class_names", "compute_dtype", "alpha_split"}
# `make test` installs saved_model_cli and tensorflow-serving-api and sets this: their tests fail, not skip.
REQUIRE_SERVING_TOOLS = os.environ.get("TFSMOOTH_REQUIRE_SERVING_TOOLS") == "1"


# -------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(1)
    return models.small_cnn(4, input_shape=(8, 8, 3))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(2).uniform(size=(5, 8, 8, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def smoothed(model):
    return SmoothedClassifier(model, 4, SIGMA, noise_block=BLOCK)


@pytest.fixture(scope="module")
def version_dir(smoothed, tmp_path_factory):
    base = tmp_path_factory.mktemp("export") / "models"
    return export.export_smoothed(smoothed, str(base), n0=N0, n=N, alpha=ALPHA, batch_size=BATCH, version=3,
                           class_names=["cat", "dog", "eel", "fox"])


@pytest.fixture(scope="module")
def loaded(version_dir):
    return tf.saved_model.load(version_dir)


@pytest.fixture(scope="module")
def expected(smoothed, images):
    """The library's answers for seed SEED with the default keys 0..B-1.

    Guarded against a vacuous comparison (`_assert_counts_depend_on_noise`): tests that compare counts of the
    shared model without using these answers request this fixture for its guard."""
    certs = smoothed.certify_batch(images, N0, N, ALPHA, BATCH, seed=SEED)
    preds = smoothed.predict_batch(images, N, ALPHA, BATCH, seed=SEED)
    tight = smoothed.certify_batch(images, N0, N, ALPHA, BATCH, seed=SEED, method="t-certify")
    other_seed = smoothed.certify_batch(images, N0, N, ALPHA, BATCH, seed=SEED + 1)
    _assert_counts_depend_on_noise(np.stack([c.counts for c in certs]), np.stack([c.counts for c in other_seed]))
    return {
        "certify/label": np.array([c.label for c in certs]),
        "certify/radius": np.array([c.radius for c in certs]),
        "certify/p_a_lower": np.array([c.p_a_lower for c in certs]),
        "certify/counts": np.stack([c.counts for c in certs]),
        "certify/selection_counts": np.stack([c.selection_counts for c in certs]),
        "t_certify/label": np.array([c.label for c in tight]),
        "t_certify/radius": np.array([c.radius for c in tight]),
        "t_certify/p_a_lower": np.array([c.p_a_lower for c in tight]),
        "t_certify/p_b_upper": np.array([c.p_b_upper for c in tight]),
        "t_certify/runner_up": np.array([c.runner_up for c in tight]),
        "t_certify/counts": np.stack([c.counts for c in tight]),
        "serving_default/label": np.array([p.label for p in preds]),
        "serving_default/p_value": np.array([p.p_value for p in preds]),
        "serving_default/counts": np.stack([p.counts for p in preds]),
    }


def _assert_counts_depend_on_noise(counts, other_seed_counts):
    """Guards a "same counts" test against passing whatever the noise: some image's votes [B, K] are split over
    at least two classes, and the counts of another seed differ."""
    assert np.any(np.count_nonzero(counts, axis=-1) >= 2), f"every image is unanimous: {counts.tolist()}"
    assert not np.array_equal(counts, other_seed_counts), "another seed gives the same counts"


def _signature_defs(version_dir):
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(pathlib.Path(version_dir, "saved_model.pb").read_bytes())
    return saved.meta_graphs[0].signature_def


def _assert_matches_library(outputs, expected, names=("certify", "serving_default")):
    """outputs: {"<signature>/<output>": array}. Counts and labels exact; float outputs to 1e-5, and conservative:
    radius and p_a_lower (float64, not rounded to float32) never above the library's, the float64 p_value
    never below it."""
    for name in names:
        for key, want in expected.items():
            if key.startswith(name + "/"):
                got = np.asarray(outputs[key])
                if want.dtype.kind == "f":
                    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-6, err_msg=key)
                else:
                    np.testing.assert_array_equal(got, want, err_msg=key)
                if key.endswith(("/radius", "/p_a_lower")):
                    assert got.dtype == np.float64 and np.all(got <= want), (key, got, want)
                if key.endswith("/p_b_upper"):
                    assert got.dtype == np.float64 and np.all(got >= want), (key, got, want)
                if key.endswith("/p_value"):
                    assert got.dtype == np.float64 and np.all(got >= want), (key, got, want)


def _call(loaded, name, images, seed):
    out = loaded.signatures[name](images=tf.constant(images), seed=tf.constant(seed, tf.int64))
    return {f"{name}/{k}": v.numpy() for k, v in out.items()}


# ----------------------------------------------------------------------------- export layout
def test_export_writes_the_version_directory_tf_serving_watches(version_dir):
    base = pathlib.Path(version_dir).parent
    assert sorted(p.name for p in base.iterdir()) == ["3"]  # no staging directory left behind
    assert {"saved_model.pb", "variables", "assets"} <= set(os.listdir(version_dir))
    assert set(_signature_defs(version_dir)) >= set(SIGNATURE_INPUTS)


def test_export_records_sigma_n0_n_alpha_and_class_names(version_dir, loaded):
    record = export.read_metadata(version_dir)
    assert {k: record[k] for k in ("sigma", "n0", "n", "alpha", "batch_size", "noise_block", "num_classes")} == \
        {"sigma": SIGMA, "n0": N0, "n": N, "alpha": ALPHA, "batch_size": BATCH, "noise_block": BLOCK, "num_classes": 4}
    assert record["class_names"] == ["cat", "dog", "eel", "fox"] and record["image_shape"] == [8, 8, 3]
    meta = {k: v.numpy() for k, v in loaded.signatures["metadata"]().items()}
    assert (meta["sigma"], meta["n0"], meta["n"], meta["alpha"], meta["noise_block"]) == (SIGMA, N0, N, ALPHA, BLOCK)
    assert [s.decode() for s in meta["class_names"]] == ["cat", "dog", "eel", "fox"]
    assert set(meta) == METADATA_OUTPUTS and meta["compute_dtype"] == b"float32" == record["compute_dtype"].encode()


def test_signatures_have_the_documented_inputs_and_seed_default(version_dir):
    defs = _signature_defs(version_dir)
    for name, inputs in SIGNATURE_INPUTS.items():
        assert set(defs[name].inputs) == inputs, name
    assert set(defs["serving_default"].outputs) == {"label", "counts", "p_value", "seed"}
    assert set(defs["certify"].outputs) == {"label", "radius", "p_a_lower", "counts", "selection_counts", "seed"}
    for name in ("serving_default", "certify", "t_certify"):  # omitted seed -> empty vector -> fresh seed
        assert tf.make_ndarray(defs[name].defaults["seed"]).shape == (0,)


def test_signature_outputs_have_the_documented_dtypes_and_shapes(version_dir, loaded, images):
    defs = _signature_defs(version_dir)
    for name, outputs in SIGNATURE_OUTPUTS.items():
        assert set(defs[name].outputs) == set(outputs), name
        seed = {"seed": tf.constant(SEED, tf.int64)} if "seed" in SIGNATURE_INPUTS[name] else {}
        answer = loaded.signatures[name](images=tf.constant(images), **seed)
        for key, (dtype, shape) in outputs.items():
            declared = defs[name].outputs[key]
            assert (tf.dtypes.as_dtype(declared.dtype), tf.TensorShape(declared.tensor_shape).as_list()) == \
                (dtype, shape), f"{name}/{key}"
            assert (answer[key].dtype, answer[key].shape.as_list()) == (dtype, [5, *shape[1:]]), f"{name}/{key}"
    assert set(defs["metadata"].outputs) == METADATA_OUTPUTS


# ------------------------------------------------------------------------- same answers as the library
def test_t_certify_signature_reproduces_the_library_and_shares_certify_draws(loaded, images, expected):
    outputs = {**_call(loaded, "t_certify", images, SEED), **_call(loaded, "certify", images, SEED)}
    _assert_matches_library(outputs, expected, names=("t_certify",))
    np.testing.assert_array_equal(outputs["t_certify/counts"], outputs["certify/counts"])
    np.testing.assert_array_equal(outputs["t_certify/selection_counts"], outputs["certify/selection_counts"])
    answered = expected["t_certify/label"] >= 0
    assert answered.any(), "no image is certified: the radius comparison would be vacuous"
    assert loaded.signatures["metadata"]()["alpha_split"].numpy() == 0.5


def test_loaded_signatures_reproduce_library_counts_labels_and_radii(loaded, images, expected):
    outputs = {**_call(loaded, "certify", images, SEED), **_call(loaded, "serving_default", images, SEED)}
    _assert_matches_library(outputs, expected)
    np.testing.assert_array_equal(outputs["certify/seed"], [SEED] * 5)
    assert outputs["certify/counts"].sum(axis=1).tolist() == [N] * 5  # every estimation draw counted once
    assert outputs["certify/selection_counts"].sum(axis=1).tolist() == [N0] * 5


@pytest.mark.usefixtures("expected")  # its guard: the counts of these images depend on the seed
def test_request_smaller_than_one_pass_matches_library(loaded, smoothed, images):
    for image in (images[:1], images[3:4]):
        out = _call(loaded, "certify", image, SEED)
        cert = smoothed.certify_batch(image, N0, N, ALPHA, BATCH, seed=SEED)[0]
        np.testing.assert_array_equal(out["certify/counts"][0], cert.counts)
        np.testing.assert_array_equal(out["certify/selection_counts"][0], cert.selection_counts)
        assert (out["certify/label"][0], out["certify/radius"][0]) == (cert.label, pytest.approx(cert.radius, abs=1e-5))
        pred = smoothed.predict_batch(image, N, ALPHA, BATCH, seed=SEED)[0]
        np.testing.assert_array_equal(_call(loaded, "serving_default", image, SEED)["serving_default/counts"][0],
                                      pred.counts)


_CLIENT = r"""
import sys
import numpy as np
import tensorflow as tf

export_dir, inputs, outputs = sys.argv[1:4]
data = np.load(inputs)
loaded = tf.saved_model.load(export_dir)
results = {}
for name in ("serving_default", "certify"):
    out = loaded.signatures[name](images=tf.constant(data["images"]), seed=tf.constant(data["seed"]))
    results.update({name + "/" + key: value.numpy() for key, value in out.items()})
assert not [m for m in sys.modules if m == "tfsmooth" or m.startswith("tfsmooth.")], "tfsmooth was imported"
np.savez(outputs, **results)
"""


def test_process_without_tfsmooth_reproduces_library(version_dir, images, expected, tmp_path):
    (tmp_path / "client.py").write_text(_CLIENT)
    np.savez(tmp_path / "inputs.npz", images=images, seed=np.int64(SEED))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    done = subprocess.run([sys.executable, str(tmp_path / "client.py"), version_dir, str(tmp_path / "inputs.npz"),
                           str(tmp_path / "out.npz")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_matches_library(dict(np.load(tmp_path / "out.npz")), expected)


def test_base_logits_are_the_models_logits_without_noise(loaded, model, images):
    got = loaded.signatures["base_logits"](images=tf.constant(images))["logits"].numpy()
    np.testing.assert_allclose(got, model(images, training=False).numpy(), atol=1e-5)


# ----------------------------------------------------------------------------------- the seed
def test_omitted_seed_draws_a_fresh_seed_per_call_and_per_load_that_reproduces(loaded, version_dir, images):
    # Image 3, whose votes split about 45 / 55 between classes 0 and 3 (see `expected`), so that its counts
    # depend on the seed: a unanimous image would replay the same counts whatever seed the replay used.
    first = loaded.certify(images[3:4])  # the restored function applies the default (empty) seed
    second = loaded.certify(images[3:4])
    reloaded = tf.saved_model.load(version_dir)  # keep a reference: its variables die with it
    other_load = reloaded.certify(images[3:4])
    seeds = {int(r["seed"][0]) for r in (first, second, other_load)}
    assert len(seeds) == 3  # three draws from [0, 2**62): a collision has probability < 1e-18
    assert np.count_nonzero(first["counts"].numpy()) >= 2  # P(unanimous) < 1e-20 at p_A ~ 0.55, n = 100
    replay = _call(loaded, "certify", images[3:4], int(first["seed"][0]))
    np.testing.assert_array_equal(replay["certify/counts"], first["counts"].numpy())


@pytest.mark.usefixtures("expected")  # its guard: the counts of these images depend on the seed
def test_seed_given_as_copies_equals_scalar_seed(loaded, images):
    # REST row format turns a per-instance "seed": 11 into the vector [11, 11, 11, 11, 11].
    vector = _call(loaded, "serving_default", images, [SEED] * 5)
    scalar = _call(loaded, "serving_default", images, SEED)
    np.testing.assert_array_equal(vector["serving_default/counts"], scalar["serving_default/counts"])


@pytest.mark.parametrize("seed", [[-1], [3, 4]], ids=["negative", "unequal"])
def test_bad_seed_fails_with_clear_message(loaded, images, seed):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"seed must be one integer in \[0, 2\*\*63\)"):
        _call(loaded, "serving_default", images, seed)


# ----------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("name", ["serving_default", "certify", "base_logits"])
@pytest.mark.parametrize("bad, fragment", [
    (lambda x: x[0], r"got shape\] \[8 8 3\]"),
    (lambda x: x[:, :4], r"got shape\] \[5 4 8 3\]"),
    (lambda x: np.where(x > 0.9, np.nan, x), "got NaN or infinite values"),
    (lambda x: x + 0.5, r"got values in \[min, max\] =\]"),
    (lambda x: x - 0.5, r"got values in \[min, max\] =\]"),
], ids=["rank3", "spatial", "nan", "above_one", "below_zero"])
def test_bad_images_fail_with_clear_message(loaded, images, name, bad, fragment):
    inputs = {"images": tf.constant(bad(images).astype(np.float32))}
    if name != "base_logits":
        inputs["seed"] = tf.constant(1, tf.int64)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"images must be float32 pixels \[batch, 8, 8, 3\] in \[0, 1\]; " + fragment):
        loaded.signatures[name](**inputs)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"sigma": 0.0}, "sigma must be a finite number > 0"),
    ({"sigma": -1.0}, "sigma must be a finite number > 0"),
    ({"alpha": 0.0}, r"alpha must be in the open interval \(0, 1\)"),
    ({"alpha": 1.0}, r"alpha must be in the open interval \(0, 1\)"),
    # alpha = 0.01: PREDICT needs 2 * 2**-n <= 0.01, n >= 8 (certify alone would need 7)
    ({"n": 7}, r"n=7 is too small .* use n >= 8"),
    ({"n0": 0}, "n0 must be an integer >= 1"),
    # the domain where the in-graph statistics are validated against scipy (test_graph_stats.py)
    ({"n": 10_000_001}, r"n=10000001 is above the largest n .* use n <= 10,000,000"),
    ({"alpha": 0.5}, r"alpha=0.5 is outside .* use 1e-12 <= alpha <= 0.49"),
    ({"version": 0}, "version must be an integer >= 1"),
    ({"version": "2"}, "version must be an integer >= 1"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"num_classes": 5}, "num_classes=5 but the base model outputs 4"),
    ({"class_names": ["a", "b"]}, "class_names must be 4 non-empty strings"),
])
def test_bad_export_arguments_raise_value_error_naming_the_argument(model, tmp_path, kwargs, fragment):
    arguments = dict(sigma=SIGMA, num_classes=4, n0=N0, n=N, alpha=ALPHA, version=1)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=fragment):
        export.export_saved_model(model, str(tmp_path / "models"), **arguments)
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_existing_non_empty_version_directory_is_refused(model, tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"old")
    with pytest.raises(ValueError, match="version=1: .* already exists and is not empty"):
        export.export_saved_model(model, str(tmp_path), sigma=SIGMA, num_classes=4, n=N, alpha=ALPHA)
    assert (tmp_path / "1" / "saved_model.pb").read_bytes() == b"old"


def test_model_without_static_input_shape_is_refused(tmp_path):
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(inputs)))
    with pytest.raises(ValueError, match="base_model must have a static input shape"):
        export.export_saved_model(model, str(tmp_path), sigma=SIGMA, num_classes=4, n=N, alpha=ALPHA)


# ----------------------------------------------------------------------------- saved_model_cli
def _missing_serving_tool(reason):
    """Skips, or fails when TFSMOOTH_REQUIRE_SERVING_TOOLS=1 (`make test`, which installs the tools)."""
    if REQUIRE_SERVING_TOOLS:
        pytest.fail(f"{reason}, and TFSMOOTH_REQUIRE_SERVING_TOOLS=1 requires it (`make install-test` installs it)")
    pytest.skip(reason)


def _saved_model_cli():
    path = pathlib.Path(sys.executable).parent / "saved_model_cli"
    if not path.exists():
        _missing_serving_tool(f"saved_model_cli not found beside {sys.executable}")
    return str(path)


def test_saved_model_cli_show_lists_the_signatures(version_dir):
    done = subprocess.run([_saved_model_cli(), "show", "--dir", version_dir, "--all"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in SIGNATURE_INPUTS:
        assert f"signature_def['{name}']" in done.stdout
    assert "outputs['radius']" in done.stdout and "inputs['seed']" in done.stdout


def test_saved_model_cli_run_executes_serving_default(version_dir, images, expected, tmp_path):
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "seed.npy", np.int64(SEED))
    for inputs, out in ((f"images={tmp_path / 'images.npy'};seed={tmp_path / 'seed.npy'}", "seeded"),
                        (f"images={tmp_path / 'images.npy'}", "default_seed")):
        done = subprocess.run([_saved_model_cli(), "run", "--dir", version_dir, "--tag_set", "serve",
                               "--signature_def", "serving_default", "--inputs", inputs,
                               "--outdir", str(tmp_path / out)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    seeded = {f"serving_default/{k}": np.load(tmp_path / "seeded" / f"{k}.npy") for k in ("label", "counts", "p_value")}
    _assert_matches_library(seeded, expected, names=("serving_default",))
    unseeded_counts = np.load(tmp_path / "default_seed" / "counts.npy")
    assert unseeded_counts.shape == (5, 4) and unseeded_counts.sum(axis=1).tolist() == [N] * 5


# -------------------------------------------------------------------------- TF Serving requests
@pytest.fixture(scope="module")
def session_bundle(version_dir):
    """The export loaded as TF Serving loads it: a TF1 Session over the MetaGraph (SavedModelBundle)."""
    graph = tf.Graph()
    with graph.as_default():
        session = tf.compat.v1.Session(graph=graph)
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], version_dir)
    yield session, meta_graph
    session.close()


def _serve(session_bundle, name, arrays):
    """TF Serving's Predict: check the input names, feed omitted inputs from the signature's
    `defaults`, run the Session on the signature's tensor names. Returns {"<name>/<output>": array}."""
    session, meta_graph = session_bundle
    signature = meta_graph.signature_def[name]
    unknown = set(arrays) - set(signature.inputs)
    missing = set(signature.inputs) - set(arrays) - set(signature.defaults)
    assert not unknown and not missing, f"the server would refuse: extra {unknown}, missing {missing}"
    feeds = {}
    for alias, info in signature.inputs.items():
        value = arrays[alias] if alias in arrays else tf.make_ndarray(signature.defaults[alias])
        assert tf.dtypes.as_dtype(info.dtype).as_numpy_dtype == value.dtype, alias  # refused otherwise
        feeds[info.name] = value
    fetches = {f"{name}/{alias}": info.name for alias, info in signature.outputs.items()}
    return session.run(fetches, feed_dict=feeds)


def test_session_loader_like_tf_serving_reproduces_library_and_applies_seed_default(session_bundle, images,
                                                                                     expected):
    outputs = {**_serve(session_bundle, "certify", {"images": images, "seed": np.int64(SEED)}),
               **_serve(session_bundle, "serving_default", {"images": images, "seed": np.int64(SEED)})}
    _assert_matches_library(outputs, expected)
    first, second = (_serve(session_bundle, "certify", {"images": images}) for _ in range(2))
    assert first["certify/seed"][0] != second["certify/seed"][0]  # fresh seeds, P(equal) = 2**-62
    assert first["certify/counts"].sum(axis=1).tolist() == [N] * 5


@pytest.mark.parametrize("name", ["serving_default", "certify", "base_logits", "metadata"])
def test_predict_request_for_each_signature_is_well_formed(session_bundle, images, expected, name):
    try:
        from tensorflow_serving.apis import predict_pb2  # noqa: PLC0415  (optional: tensorflow-serving-api)
    except ImportError:
        _missing_serving_tool("tensorflow-serving-api is not installed")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tfsmooth"
    request.model_spec.signature_name = name
    if "images" in SIGNATURE_INPUTS[name]:
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
    if "seed" in SIGNATURE_INPUTS[name]:
        request.inputs["seed"].CopyFrom(tf.make_tensor_proto(np.int64(SEED)))
    request = predict_pb2.PredictRequest.FromString(request.SerializeToString())  # over the wire
    signature = session_bundle[1].signature_def[request.model_spec.signature_name]
    for alias, proto in request.inputs.items():
        assert proto.dtype == signature.inputs[alias].dtype, alias
        shape = tf.TensorShape([d.size for d in proto.tensor_shape.dim])
        assert tf.TensorShape(signature.inputs[alias].tensor_shape).is_compatible_with(shape), alias
    outputs = _serve(session_bundle, name, {k: tf.make_ndarray(v) for k, v in request.inputs.items()})
    assert set(outputs) == {f"{name}/{k}" for k in signature.outputs}
    if name in ("serving_default", "certify"):
        _assert_matches_library(outputs, expected, names=(name,))
    if name == "base_logits":
        assert outputs["base_logits/logits"].shape == (5, 4)


# The two REST bodies of the README's "Serving" section, built the same way from `images`.
def _rest_columnar(images):
    return {"signature_name": "certify", "inputs": {"images": images.tolist(), "seed": SEED}}


def _rest_rows(images):
    return {"signature_name": "serving_default", "instances": [{"images": image.tolist()} for image in images]}


def _rest_arrays(body, signature):
    """TF Serving's REST decoding: columnar "inputs" are tensors; row "instances" stack per name.
    Values take the signature's dtypes."""
    dtypes = {k: tf.dtypes.as_dtype(v.dtype).as_numpy_dtype for k, v in signature.inputs.items()}
    if "inputs" in body:
        return {k: np.asarray(v, dtypes[k]) for k, v in body["inputs"].items()}
    keys = body["instances"][0].keys()
    return {k: np.asarray([row[k] for row in body["instances"]], dtypes[k]) for k in keys}


@pytest.mark.parametrize("build", [_rest_columnar, _rest_rows], ids=["columnar_with_seed", "rows_without_seed"])
def test_readme_rest_json_is_accepted_by_the_signature(session_bundle, images, expected, build):
    body = json.loads(json.dumps(build(images)))
    name = body["signature_name"]
    outputs = _serve(session_bundle, name, _rest_arrays(body, session_bundle[1].signature_def[name]))
    if "seed" in body.get("inputs", {}):
        _assert_matches_library(outputs, expected, names=(name,))
    else:
        assert outputs[f"{name}/counts"].sum(axis=1).tolist() == [N] * 5


def test_export_of_a_batch_norm_model_reproduces_library_counts(tmp_path):
    # Conv + BatchNormalization pairs are folded into one convolution by both the library and the export
    # (tfsmooth.models.folding); with non-trivial batch-norm statistics their counts must still agree exactly.
    keras.utils.set_random_seed(5)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    outputs = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x))
    bn_model = keras.Model(inputs, outputs)
    bn = bn_model.layers[2]
    rng = np.random.default_rng(6)
    bn.set_weights([rng.uniform(0.5, 2, 8), rng.normal(size=8), rng.normal(size=8), rng.uniform(0.5, 2, 8)])
    bn_model.layers[1].set_weights([rng.normal(scale=1.0, size=(3, 3, 3, 8))])
    bn_model.layers[-1].set_weights([rng.normal(scale=5.0, size=(8, 4)), np.zeros(4)])
    # Pure red and pure green images: the model's logits put them in different classes (2 and 1).
    images = np.stack([np.broadcast_to(np.array(c, np.float32), (8, 8, 3)) for c in [(1, 0, 0), (0, 1, 0)]])
    lib = SmoothedClassifier(bn_model, 4, SIGMA, noise_block=BLOCK)
    certs = lib.certify_batch(images, N0, N, ALPHA, BATCH, seed=SEED)
    exported = tf.saved_model.load(export.export_smoothed(lib, str(tmp_path / "bn"), n0=N0, n=N, alpha=ALPHA, batch_size=BATCH))
    out = _call(exported, "certify", images, SEED)
    np.testing.assert_array_equal(out["certify/counts"], np.stack([c.counts for c in certs]))
    np.testing.assert_array_equal(out["certify/label"], [c.label for c in certs])
    assert len({tuple(c.counts) for c in certs}) > 1  # the images are told apart: a non-degenerate check
