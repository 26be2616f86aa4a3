"""Per-image comparison of T-CERTIFY with CERTIFY on the same counts (issue 11's "where it gains and loses").

    .venv/bin/python benchmarks/t_certify/compare.py

For each model and n: images whose certified radius (0 where wrong or abstaining) T-CERTIFY raises or lowers by
more than 1e-4, the abstentions it turns into answers, the mean change, and the counting time (the TSVs' time
column: one pass serves the three files, so the times are the same).
"""

import os

import numpy as np

from tfsmooth import results

DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "results", "t_certify")


def main():
    for model in ("gaussian", "smoothadv"):
        for n in ("n10000", "n100000"):
            rows = {tag: results.read_results(os.path.join(DIR, f"{model}_{n}_{tag}.tsv"))
                    for tag in ("cohen", "tcertify", "tcertify_auto")}
            cohen = rows["cohen"]
            base = np.where(cohen.correct == 1, cohen.radius, 0.0)
            for tag in ("tcertify", "tcertify_auto"):
                other = rows[tag]
                assert np.array_equal(other.idx, cohen.idx), tag
                radius = np.where(other.correct == 1, other.radius, 0.0)
                gain, loss = radius > base + 1e-4, radius < base - 1e-4
                print(f"{model} {n} {tag}: {len(cohen)} images, {gain.sum()} gain (mean "
                      f"{(radius - base)[gain].mean() if gain.any() else 0:.4f}), {loss.sum()} lose (mean "
                      f"{(base - radius)[loss].mean() if loss.any() else 0:.4f}), "
                      f"{((cohen.predict == -1) & (other.predict != -1)).sum()} abstentions answered, "
                      f"{((cohen.predict != -1) & (other.predict == -1)).sum()} answers lost; "
                      f"largest radius {cohen.radius.max():.3f} -> {other.radius.max():.3f}")
            print(f"{model} {n}: counting time {cohen.time.sum() / 3600:.2f} h "
                  f"({cohen.time.mean():.1f} s per image)")


if __name__ == "__main__":
    main()
