"""Error rate of sequential certification just below a target, on simulated counts (issue 15; RESULTS.md).

A base classifier whose top class has probability p_A = Phi(1) - 0.003 (just below the threshold of radius 0.25
at sigma = 0.25): deciding r = 0.25 is an error. 3,000 seeded trials at alpha = 0.05, looks 100 ... 12,800, with
the library's alpha / L per look and with the invalid "optional stopping" variant (alpha at every look).

    .venv/bin/python benchmarks/sequential/simulate_error.py
"""

import numpy as np
from scipy.stats import norm

from tfsmooth import sequential


def error_rate(p, alpha, naive, trials=3000, n_max=12_800, radii=(0.25, 0.5), sigma=0.25, seed=0):
    decided, _ = sequential.simulate(p, sigma, radii, alpha, trials, n_max=n_max, seed=seed,
                                     alpha_per_look=alpha if naive else None)
    return float(np.mean(decided >= 1))


if __name__ == "__main__":
    p = norm.cdf(1.0) - 0.003
    print(f"alpha / L per look: {error_rate(p, 0.05, naive=False):.4f}; "
          f"alpha at every look: {error_rate(p, 0.05, naive=True):.4f} (alpha = 0.05)")
