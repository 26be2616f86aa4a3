"""Multi-worker training (issue 14, part 1): two worker processes on loopback train `small_cnn` on the embedded
sample under `MultiWorkerMirroredStrategy` (`tfsmooth.jobs.train.train`, its own loop `tfsmooth.distribute.fit`).

Checked: both workers end with the same weights; they equal, to float tolerance, a single-process
`MirroredStrategy` run on two logical CPUs with the same global batch (the same math: replica r trains on the same
slice of each global batch with the same noise, keyed by its global replica id, and normalizes its own slice in
batch normalization -- which is also what differs from a one-device run, so that comparison would not be exact);
only the chief writes the run's files; a rerun with more epochs resumes from the chief's checkpoint on both workers.
The processes are started and stopped by the test, each bounded in time.
"""

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # three TensorFlow processes, ~1 min in all

TIMEOUT = 240


def _config(epochs):
    from tfsmooth import jobs

    return jobs.TrainConfig(dataset="cifar10_sample", arch="small_cnn", sigma=0.25, epochs=epochs, batch=8,
                            train_examples=32, val_examples=16, lr=0.05, lr_step=10, seed=3)


def _worker(mode, outdir, result, epochs):
    """Runs in a fresh process: trains under the strategy of `mode`, saves the base model's weights to `result`."""
    import tensorflow as tf

    from tfsmooth import distribute, jobs

    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    else:
        strategy = distribute.make_strategy("multi-worker")
    writes = []
    if not distribute.is_chief(strategy):  # record every file a non-chief writes into the shared outdir
        from tfsmooth import files

        for name in ("atomic_write", "write_json"):
            original = getattr(files, name)

            def recording(path, *args, _original=original, **kwargs):
                if os.path.abspath(str(path)).startswith(os.path.abspath(outdir)):
                    writes.append(str(path))
                return _original(path, *args, **kwargs)

            setattr(files, name, recording)
    base = jobs.train.train(_config(epochs), outdir, verbose=0, strategy=strategy)
    np.savez(result, replicas=strategy.num_replicas_in_sync, chief=distribute.is_chief(strategy),
             foreign_writes=len(writes), **{f"weight_{i}": w for i, w in enumerate(base.get_weights())})


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _env(**extra):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tfsmooth, if it is not installed
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), root) if p))
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _start(mode, outdir, result, epochs, **env):
    return subprocess.Popen([sys.executable, __file__, mode, str(outdir), str(result), str(epochs)],
                            env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(processes):
    """Waits for all; kills the rest and fails on a timeout or an error, with the process's output."""
    outputs = []
    try:
        for process in processes:
            out, _ = process.communicate(timeout=TIMEOUT)
            outputs.append(out)
            assert process.returncode == 0, out[-4000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return outputs


def _two_workers(outdir, results, epochs):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    _finish([_start("worker", outdir, results[i], epochs,
                    TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
             for i in range(2)])
    return [dict(np.load(path)) for path in results]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("multiworker")
    shared = root / "shared_outdir"  # both workers get the same outdir, as on a shared file system
    workers = _two_workers(shared, [root / "w0.npz", root / "w1.npz"], epochs=2)
    with open(shared / "log.csv") as f:
        log_after_two = f.read().splitlines()
    _finish([_start("mirrored", root / "mirrored", root / "m.npz", 2)])
    resumed = _two_workers(shared, [root / "r0.npz", root / "r1.npz"], epochs=3)
    with open(root / "mirrored" / "log.csv") as f:
        mirrored_log = f.read().splitlines()
    return dict(workers=workers, mirrored=dict(np.load(root / "m.npz")), shared=shared, log_after_two=log_after_two,
                resumed=resumed, mirrored_log=mirrored_log)


def _weights(result):
    return [result[f"weight_{i}"] for i in range(sum(k.startswith("weight_") for k in result))]


def test_two_workers_are_two_replicas_and_worker_0_is_the_chief(runs):
    assert [int(w["replicas"]) for w in runs["workers"]] == [2, 2]
    assert [bool(w["chief"]) for w in runs["workers"]] == [True, False]
    assert int(runs["mirrored"]["replicas"]) == 2


def test_both_workers_end_with_the_same_weights(runs):
    w0, w1 = (_weights(w) for w in runs["workers"])
    assert len(w0) == len(w1) > 0
    for a, b in zip(w0, w1):
        np.testing.assert_array_equal(a, b)


def test_two_workers_equal_one_process_on_two_replicas_with_the_same_global_batch(runs):
    workers, mirrored = _weights(runs["workers"][0]), _weights(runs["mirrored"])
    assert len(workers) == len(mirrored) > 0
    for a, b in zip(workers, mirrored):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_the_logs_of_two_workers_equal_the_single_process_runs(runs):
    # Metrics reduced over both workers: loss, accuracy and their val_ columns as on two local replicas.
    ours, theirs = (list(csv.DictReader(lines)) for lines in (runs["log_after_two"], runs["mirrored_log"]))
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs):
        assert set(a) == set(b) and {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(a)
        for key in set(a) - {"epoch_seconds"}:
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4, abs=1e-6), key


def test_only_the_chief_writes_the_run_files(runs):
    assert int(runs["workers"][1]["foreign_writes"]) == 0 and int(runs["resumed"][1]["foreign_writes"]) == 0
    shared = runs["shared"]
    assert sorted(os.listdir(shared)) == sorted(["config.json", "checkpoint.keras", "train_state.json",
                                                 "base_model.keras", "log.csv"])
    header, *rows = runs["log_after_two"]
    assert header.startswith("epoch,") and [row.split(",")[0] for row in rows] == ["0", "1"]  # one row per epoch


def test_a_rerun_with_more_epochs_resumes_on_both_workers(runs):
    with open(runs["shared"] / "log.csv") as f:
        header, *rows = f.read().splitlines()
    assert [row.split(",")[0] for row in rows] == ["0", "1", "2"]
    with open(runs["shared"] / "train_state.json") as f:
        assert json.load(f)["epochs_done"] == 3
    r0, r1 = (_weights(r) for r in runs["resumed"])
    for a, b, before in zip(r0, r1, _weights(runs["workers"][0])):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, before) for a, before in zip(r0, _weights(runs["workers"][0])))


def test_multi_worker_needs_a_valid_tf_config():
    from tfsmooth import distribute

    with pytest.raises(ValueError, match="TF_CONFIG environment variable"):
        distribute.check_tf_config({})
    with pytest.raises(ValueError, match="not valid JSON"):
        distribute.check_tf_config({"TF_CONFIG": "{cluster"})
    with pytest.raises(ValueError, match="'worker'"):
        distribute.check_tf_config({"TF_CONFIG": json.dumps({"cluster": {"ps": ["a:1"]}, "task": {}})})
    with pytest.raises(ValueError, match="task must be"):
        distribute.check_tf_config({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1"]},
                                                             "task": {"type": "worker", "index": 1}})})
    good = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    assert distribute.check_tf_config({"TF_CONFIG": json.dumps(good)}) == good
    with pytest.raises(ValueError, match="strategy must be one of"):
        distribute.make_strategy("tpu")


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
