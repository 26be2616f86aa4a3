"""Counting on several devices (issue 14, part 3): pass p on device p mod D, the same counts as on one device.

Several devices need two logical CPU devices, which TensorFlow accepts only before it initializes: that part runs in
a fresh process (`_on_two_devices`), which saves what the tests compare.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

SHAPE = (8, 8, 3)


def _on_two_devices(path):
    """Runs in a fresh process with two logical CPU devices: counts on one device, on both, on "all"; and where the
    ops of each device's pass were placed. Saves them to `path`."""
    import keras
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tfsmooth import SmoothedClassifier, models

    keras.utils.set_random_seed(0)
    model = models.small_cnn(3, input_shape=SHAPE)
    images = np.random.default_rng(1).uniform(size=(5, *SHAPE)).astype(np.float32)
    out = {}
    for name, devices, in_flight in (("default", None, None), ("one", ["CPU:0"], None),
                                     ("two", "cpu:0,/device:CPU:1", None), ("all", "all", None),
                                     ("pipelined", ["CPU:1", "CPU:0"], 3)):
        smoothed = SmoothedClassifier(model, 3, 0.5, devices=devices, parallel_passes=1, in_flight=in_flight)
        # batch 300: 3 blocks per pass, 5 images x (1 + 4) blocks = 25 blocks = 9 passes, shared across images
        certificates = smoothed.certify_batch(images, n0=100, n=400, alpha=0.01, batch_size=300, seed=7)
        out[f"{name}_counts"] = np.stack([c.counts for c in certificates])
        out[f"{name}_selection"] = np.stack([c.selection_counts for c in certificates])
        out[f"{name}_devices"] = np.array(smoothed.devices or [], dtype=str)
        placed = []
        for (_, _, device), function in smoothed._count_fns.items():
            graph = function.get_concrete_function().graph
            ops = {op.device for op in graph.get_operations() if op.type in ("Conv2D", "StatelessRandomNormalV2")}
            placed.append(f"{device}|{','.join(sorted(ops))}")
        out[f"{name}_placed"] = np.array(placed, dtype=str)
    np.savez(path, **out)


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory):
    path = tmp_path_factory.mktemp("devices") / "two.npz"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), root) if p))
    done = subprocess.run([sys.executable, __file__, str(path)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(np.load(path))


@pytest.mark.slow
def test_two_devices_count_exactly_what_one_device_counts(two_devices):
    for name in ("one", "two", "all", "pipelined"):
        np.testing.assert_array_equal(two_devices[f"{name}_counts"], two_devices["default_counts"])
        np.testing.assert_array_equal(two_devices[f"{name}_selection"], two_devices["default_selection"])
    assert two_devices["default_counts"].sum(axis=1).tolist() == [400] * 5
    assert len({tuple(row) for row in two_devices["default_counts"]}) > 1  # the images' counts differ: not trivial


@pytest.mark.slow
def test_each_device_runs_its_own_pass(two_devices):
    assert two_devices["two_devices"].tolist() == ["/device:CPU:0", "/device:CPU:1"]
    assert two_devices["all_devices"].tolist() == ["/device:CPU:0", "/device:CPU:1"]
    placed = sorted(two_devices["two_placed"].tolist())
    assert len(placed) == 2
    for entry, device in zip(placed, ("/device:CPU:0", "/device:CPU:1")):
        target, ops = entry.split("|")
        assert target == device
        assert ops and all(op.endswith(device) for op in ops.split(",")), entry  # noise and convolutions there
    assert two_devices["default_devices"].tolist() == []


def test_resolve_devices_names_the_devices_of_this_process():
    import tensorflow as tf

    from tfsmooth import counting

    assert counting.resolve_devices(None) is None
    local = [d.name for d in tf.config.list_logical_devices("GPU")] or [d.name for d in
                                                                         tf.config.list_logical_devices("CPU")]
    assert counting.resolve_devices("all") == tuple(local)
    assert counting.resolve_devices(["cpu:0"]) == ("/device:CPU:0",)
    assert counting.resolve_devices("/job:localhost/replica:0/task:0/device:CPU:0") == ("/device:CPU:0",)


@pytest.mark.parametrize("devices,match", [
    ("GPU:7", "'GPU:7' is not a device of this process"),
    ("CPU:0,CPU:0", "listed twice"),
    ("CPU", "not a device name with an index"),
    ("bogus:0", "not a device name with an index"),
    ([], "devices must be"),
    ("CPU:0,", "devices must be"),
    ([0], "devices must be"),
    (0, "devices must be"),
    (1.5, "devices must be"),
    ("/job:worker/replica:0/task:3/device:CPU:0", "names another job or task"),
])
def test_resolve_devices_refuses_bad_names(devices, match):
    from tfsmooth import SmoothedClassifier, counting

    with pytest.raises(ValueError, match=match):
        counting.resolve_devices(devices)
    import fixtures

    with pytest.raises(ValueError, match=match):
        SmoothedClassifier(fixtures.constant_classifier(), 10, 0.25, devices=devices)


def test_resolve_devices_refuses_devices_of_two_kinds(monkeypatch):
    import tensorflow as tf

    from tfsmooth import counting

    fake = [tf.config.LogicalDevice("/device:CPU:0", "CPU"), tf.config.LogicalDevice("/device:GPU:0", "GPU"),
            tf.config.LogicalDevice("/device:GPU:1", "GPU")]
    monkeypatch.setattr(tf.config, "list_logical_devices",
                        lambda kind=None: [d for d in fake if kind is None or d.device_type == kind])
    assert counting.resolve_devices("all") == ("/device:GPU:0", "/device:GPU:1")
    assert counting.resolve_devices("gpu:1,GPU:0") == ("/device:GPU:1", "/device:GPU:0")
    with pytest.raises(ValueError, match="mix device kinds"):
        counting.resolve_devices("GPU:0,CPU:0")


def test_in_flight_defaults_to_one_on_cpus_and_is_checked():
    import fixtures

    from tfsmooth import SmoothedClassifier

    assert SmoothedClassifier(fixtures.constant_classifier(), 10, 0.25, devices="CPU:0")._in_flight() == 1
    assert SmoothedClassifier(fixtures.constant_classifier(), 10, 0.25, in_flight=4)._in_flight() == 4
    with pytest.raises(ValueError, match="in_flight"):
        SmoothedClassifier(fixtures.constant_classifier(), 10, 0.25, in_flight=0)


if __name__ == "__main__":
    _on_two_devices(sys.argv[1])
