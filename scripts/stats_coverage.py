"""Coverage of the contrasts' 95% intervals in simulated studies whose true difference is 0
(adapterxfer/study/coverage.py): the study statistics now, and optionally an older stats module.

    .venv/bin/python scripts/stats_coverage.py [--studies 1000] [--seed 1]
    git show 42f365d:adapterxfer/study/stats.py > /tmp/old_stats.py
    .venv/bin/python scripts/stats_coverage.py --stats /tmp/old_stats.py --studies 200

``--stats`` loads a stats.py file as a module of adapterxfer.study (the two-level bootstrap before
issue 16 takes 2000 replicates, so 200 studies keep it to minutes). Lines:
RESULT <setting>_<seeds>seeds_coverage, ..._rejection (p < 0.05), ..._width; for the one-seed setting
also one_seed_1seeds_coverage_given_seeds (the truth of that seed's models).
"""

import argparse
import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapterxfer.study import stats  # noqa: E402
from adapterxfer.study.coverage import ONE_SEED, SETTINGS, coverage  # noqa: E402


def stats_module(path: str | None):
    if path is None:
        return stats
    spec = importlib.util.spec_from_file_location("adapterxfer.study.stats_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stats", help="a stats.py to test instead of adapterxfer/study/stats.py")
    args = parser.parse_args()
    difference = stats_module(args.stats).paired_difference
    runs = [(name, setting, seeds) for name, setting in SETTINGS.items() for seeds in (3, 5)]
    for name, setting, seeds in runs + [("one_seed", ONE_SEED, 1)]:
        result = coverage(setting, seeds, args.studies, args.seed, difference=difference)
        keys = ("coverage", "rejection", "width") + (("coverage_given_seeds",) if seeds == 1 else ())
        for key in keys:
            print(f"RESULT {name.replace('-', '_')}_{seeds}seeds_{key} {result[key]:.4f}", flush=True)


if __name__ == "__main__":
    main()
