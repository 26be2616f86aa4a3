#!/usr/bin/env bash
# Issue 14, part 3: on a machine with a GPU, after the README's set-up (`make install`, which installs nothing more),
# print the counting path's samples/s at batch 400 ... 20,000 in float32 and bfloat16 and check that the GPU's counts
# equal the CPU's for a fixed seed where no draw is near a decision boundary (benchmarks/device_check.py).
# A few minutes; no downloads beyond the set-up; exit status 0 = counts check passed.
#
#     bash benchmarks/device_check.sh [extra arguments of device_check.py]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || make install
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: none"
exec timeout 300 "$PY" benchmarks/device_check.py "$@"
