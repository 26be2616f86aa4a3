"""Error rate of sequential certification just below a target, on simulated counts (issue 15; RESULTS.md).

A base classifier whose top class has probability p_A = Phi(1) - 0.003 (just below the threshold of radius 0.25
at sigma = 0.25): deciding r = 0.25 is an error. 3,000 seeded trials at alpha = 0.05, looks from 100 to 12,800,
for each stopping design (`tfsmooth.sequential.DESIGNS`: 1 = alpha / L per look, 2 = alpha_l in proportion to
n_l) and for the invalid "optional stopping" variant (alpha at every look).

    .venv/bin/python benchmarks/sequential/simulate_error.py
"""

import numpy as np
from scipy.stats import norm

from tfsmooth import sequential


def error_rate(p, alpha, naive, trials=3000, n_max=12_800, radii=(0.25, 0.5), sigma=0.25, seed=0, design=2):
    decided, _ = sequential.simulate(p, sigma, radii, alpha, trials, n_max=n_max, seed=seed,
                                     alpha_per_look=alpha if naive else None, design=design)
    return float(np.mean(decided >= 1))


if __name__ == "__main__":
    p = norm.cdf(1.0) - 0.003
    rates = [f"design {d}: {error_rate(p, 0.05, naive=False, design=d):.4f}" for d in sequential.DESIGNS]
    print(f"{'; '.join(rates)}; alpha at every look (design 1's looks): "
          f"{error_rate(p, 0.05, naive=True, design=1):.4f} (alpha = 0.05)")
