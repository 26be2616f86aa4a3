import numpy as np, tensorflow as tf, time
from scipy import special
from tfsmooth import export, stats
rng = np.random.default_rng(1)
eps = np.finfo(float).eps
N = 200_000
n = np.floor(np.exp(rng.uniform(0, np.log(1e7), N))).astype(np.int64)
k = np.clip(np.where(rng.uniform(size=N) < 0.5, np.round(n * rng.uniform(size=N)), np.round(n / 2 + rng.normal(size=N) * np.sqrt(n) / 2 * 3)), 1, n).astype(np.int64)
a, b = k.astype(float), (n - k + 1).astype(float)
mean, sd = a / (a + b), np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
x = np.clip(mean + rng.uniform(-10, 10, N) * sd, 0, 1)
want = special.betainc(a, b, x)
got = tf.function(export._binomial_tail)(a, n.astype(float), x).numpy()
ok = (want >= 1e-200) & (want <= 1 - 1e-9)
unit = eps * (1 + (n + 1) * np.log(n + 1) + np.abs(np.log(np.where(ok, want, 1))))
sc = np.abs(got - want)[ok] / want[ok] / unit[ok]
print(f"tail random: {ok.sum()} points, max error {sc.max():.2f} units (margin 16)")
M = 20_000
n = np.floor(np.exp(rng.uniform(0, np.log(1e7), M))).astype(np.int64)
k = np.clip(np.where(rng.uniform(size=M) < 0.5, np.round(n * rng.uniform(size=M)), np.round(n / 2 + rng.normal(size=M) * np.sqrt(n) / 2 * 3)), 0, n).astype(np.int64)
alpha = np.exp(rng.uniform(np.log(1e-12), np.log(0.49), M))
host = np.array([stats.clopper_pearson_lower(int(kk), int(nn), float(aa)) for kk, nn, aa in zip(k, n, alpha)])
t = time.time(); graph = tf.function(export.tf_clopper_pearson_lower)(k, n, alpha).numpy(); print("graph s", time.time() - t)
print(f"bound random: {M} points, above scipy at {np.sum(graph > host)}, max below {np.max(host - graph):.2e}")
n_b = np.floor(np.exp(rng.uniform(0, np.log(5e6), M))).astype(np.int64)
n_a = n_b + np.abs(np.round(rng.normal(size=M) * np.sqrt(n_b) * 4)).astype(np.int64)
host = np.array([stats.binomial_p_value(int(p), int(q)) for p, q in zip(n_a, n_b)])
graph = tf.function(export.tf_binomial_p_value)(n_a, n_b).numpy()
pos = host > 0
print(f"p-value random: {M} pairs, below scipy at {np.sum(graph < host)}, max relative above {np.max((graph-host)[pos]/host[pos]):.2e}")
