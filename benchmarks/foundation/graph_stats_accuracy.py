"""Prints the in-graph statistics' errors against scipy over the grids of tests/test_graph_stats.py."""
import sys; sys.path.insert(0, "tests")
import math
import numpy as np, tensorflow as tf
from scipy import special
from tfsmooth import export, stats
import test_graph_stats as T
eps = np.finfo(float).eps
# 1. tail: relative error in units of eps (1 + (n+1) ln(n+1) + |ln I|), plain tf.math.betainc for comparison
rows = []
for n in T.N_GRID:
    for k in T._successes_grid(n):
        if k == 0: continue
        a, b = k, n - k + 1
        mean, sd = a / (a + b), math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
        z = np.concatenate([np.linspace(-9, 9, 73), [-1.001, -0.999, -0.3, -0.01, 0.01, 0.3, 0.999, 1.001]])
        rows += [(k, n, x) for x in np.unique(np.clip(mean + z * sd, 0, 1))]
k, n, x = (np.array(v, np.float64) for v in zip(*rows))
want = special.betainc(k, n - k + 1, x)
ok = (want >= 1e-200) & (want <= 1 - 1e-9)
unit = eps * (1 + (n + 1) * np.log(n + 1) + np.abs(np.log(np.where(ok, want, 1))))
for name, got in (("_binomial_tail", tf.function(export._binomial_tail)(k, n, x).numpy()),
                  ("tf.math.betainc", tf.math.betainc(k, n - k + 1, x).numpy())):
    rel = np.abs(got - want)[ok] / want[ok]
    print(f"{name}: {ok.sum()} points, max relative error {rel.max():.2e}, max in units {np.max(rel / unit[ok]):.2f}")
# 2. bound
grid = [(k, n, a) for n in T.N_GRID for k in T._successes_grid(n) for a in T.ALPHAS]
k, n, alpha = (np.array(v) for v in zip(*grid))
host = np.zeros(len(grid))
for a in T.ALPHAS:
    host[alpha == a] = stats.clopper_pearson_lower(k[alpha == a], n[alpha == a], a)
graph = tf.function(export.tf_clopper_pearson_lower)(k, n, alpha).numpy()
d = host - graph; i = np.argmax(d)
print(f"bound: {len(grid)} points, max above scipy {np.max(-d):.2e} (<= 0 is conservative), "
      f"max below {d.max():.2e} at k={k[i]} n={n[i]} alpha={alpha[i]}")
for lo, hi in [(0, 1e3), (1e3, 1e5), (1e5, 1e6), (1e6, 1e7 + 1)]:
    m = (n > lo) & (n <= hi); print(f"   n in ({lo:.0e}, {hi:.0e}]: max below {d[m].max():.2e}")
# 3. p-value
pairs = T._p_value_grid()
n_a, n_b = (np.array(v) for v in zip(*pairs))
host = np.array([stats.binomial_p_value(int(a), int(b)) for a, b in pairs])
graph = tf.function(export.tf_binomial_p_value)(n_a, n_b).numpy()
pos = host > 0
rel = (graph - host)[pos] / host[pos]
print(f"p-value: {len(pairs)} pairs, min relative (graph - scipy) / scipy {rel.min():.2e} (>= 0 is conservative), "
      f"max {rel.max():.2e}; zero p-values: scipy {np.sum(host == 0)}, graph {np.sum(graph == 0)}")
