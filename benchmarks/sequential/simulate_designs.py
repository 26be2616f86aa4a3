"""How the stopping designs of sequential certification compare, on simulated counts (issue 15; RESULTS.md).

For each shipped ResNet-20, the p_A of every image of issue 11's fixed-n CERTIFY rows (n = 100,000, alpha = 0.001,
sigma = 0.25; idx 0, 100, ..., 9,900 of the CIFAR-10 test set) is recovered from its radius (the count k whose
Clopper-Pearson bound gives that radius, p_A = k / n; an abstention or radius 0 is taken as p_A = 0.45: such images
stop at the first look either way), and each design of `tfsmooth.sequential` runs on binomial counts at that p_A
(`sequential.simulate`, 100 seeded trials per image; targets 0.25, 0.5, 0.75, 1.0; n_max = 100,000): the mean
estimation draws per image and the expected certified accuracy at r = 0.25, 0.5, 0.75 beside fixed-n's. This is
how design 2 was chosen (session 12); the real runs are `run.py` / `compare.py`.

    .venv/bin/python benchmarks/sequential/simulate_designs.py [--trials 100]
"""

import argparse
import os
import sys

import numpy as np
from scipy import optimize
from scipy import stats as scipy_stats

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run import ISSUE_11, MODELS  # noqa: E402

from tfsmooth import results, sequential, stats  # noqa: E402

SIGMA, ALPHA, N, RADII = 0.25, 0.001, 100_000, (0.25, 0.5, 0.75, 1.0)


def p_a_of(radius: float) -> float:
    """The p_A whose fixed-n CERTIFY bound (n = 100,000, alpha = 0.001) gives `radius` (0.45 for radius 0)."""
    if radius <= 0:
        return 0.45
    target = scipy_stats.norm.cdf(radius / SIGMA)
    return optimize.brentq(lambda k: float(stats.clopper_pearson_lower(k, N, ALPHA)) - target, N / 2, N) / N


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()
    print("| model | run | r=0.25 | r=0.5 | r=0.75 | mean draws per image | vs n = 100,000 |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name in MODELS:
        rows = results.read_results(ISSUE_11.format(name=name))
        correct, radius = rows.correct == 1, rows.radius
        fixed = [100 * np.mean(correct & (radius >= r)) for r in RADII[:3]]
        print(f"| {name} | fixed-n, n = 100,000 | " + " | ".join(f"{a:.1f}" for a in fixed) + f" | {N:,} | 1.0x |")
        for design in sequential.DESIGNS:
            draws, accuracy = 0.0, np.zeros(3)
            for j, (c, r) in enumerate(zip(correct, radius)):
                decided, used = sequential.simulate(p_a_of(float(r)), SIGMA, RADII, ALPHA, args.trials, n_max=N,
                                                    seed=j, design=design)
                draws += used.mean()
                accuracy += c * np.array([np.mean(decided >= k) for k in (1, 2, 3)])
            print(f"| {name} | sequential, design {design} (simulated) | "
                  + " | ".join(f"{a:.1f}" for a in 100 * accuracy / len(rows)) +
                  f" | {draws / len(rows):,.0f} | {N * len(rows) / draws:.1f}x fewer |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
