"""Coverage of the contrasts' 95% intervals in simulated studies whose true difference is 0
(adapterxfer/study/coverage.py): the study statistics now, and optionally an older stats module.

    .venv/bin/python scripts/stats_coverage.py [--studies 1000] [--seed 1] [--markdown]
    git show 42f365d:adapterxfer/study/stats.py > /tmp/old_stats.py
    .venv/bin/python scripts/stats_coverage.py --stats /tmp/old_stats.py --studies 200 --only basic

``--stats`` loads a stats.py file as a module of adapterxfer.study (the two-level bootstrap before
issue 16 takes 2000 replicates, so 200 studies keep it to minutes). Lines:
RESULT <case>_<seeds>seeds[_keep<k>]_<level>_{coverage,rejection,width} (rejection: p < 0.05; level
"wider": the wider of the two clusterings' intervals, what the report headlines); for the one-seed case
also ..._coverage_given_seeds (the truth of that seed's models). ``--markdown`` ends with the table of
RESULTS.md.
"""

import argparse
import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapterxfer.study import stats  # noqa: E402
from adapterxfer.study.coverage import CASES, ONE_SEED, SETTINGS, coverage  # noqa: E402

# (group, case name, setting, seeds, cluster levels or None for the setting's own, configurations kept from)
RUNS = ([("basic", name, setting, seeds, None, 1) for name, setting in SETTINGS.items() for seeds in (3, 5, 6)]
        + [("basic", "one seed", ONE_SEED, 1, None, 1)]
        + [("levels", "book-effect", CASES["book-effect"], seeds, ("chapter", "book"), 1) for seeds in (3, 6)]
        + [("tails", "heavy-tailed seeds", CASES["heavy-tailed seeds"], seeds, None, 1) for seeds in (3, 6)]
        + [("hubs", name, CASES[name], 6, ("chapter", "book"), 1)
           for name in ("hub distractors, strong", "hub distractors, mild")]
        + [("adaptive", "seed-dominated", SETTINGS["seed-dominated"], 6, None, k) for k in (2, 3, 4)]
        + [("adaptive", "clustered", SETTINGS["clustered"], 6, None, k) for k in (2, 4)])


def stats_module(path: str | None):
    if path is None:
        return stats
    spec = importlib.util.spec_from_file_location("adapterxfer.study.stats_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stats", help="a stats.py to test instead of adapterxfer/study/stats.py")
    parser.add_argument("--only", choices=sorted({run[0] for run in RUNS}), help="run one group of cases")
    parser.add_argument("--markdown", action="store_true", help="end with the table of RESULTS.md")
    args = parser.parse_args()
    difference = stats_module(args.stats).paired_difference
    table = []
    for group, name, setting, seeds, levels, keep in RUNS:
        if args.only and group != args.only:
            continue
        result = coverage(setting, seeds, args.studies, args.seed, difference=difference, levels=levels,
                          keep_smallest_sd_of=keep)
        by_level = result if levels else {setting.level: result}
        for level, values in by_level.items():
            keeping = f"_keep{keep}" if keep > 1 else ""
            stem = f"{name.replace('-', '_').replace(',', '').replace(' ', '_')}_{seeds}seeds{keeping}_{level}"
            keys = ("coverage", "rejection", "width") + (("coverage_given_seeds",) if seeds == 1 else ())
            for key in keys:
                print(f"RESULT {stem}_{key} {values[key]:.4f}", flush=True)
            table.append((name + (f", smallest sd of {keep}" if keep > 1 else ""), seeds, level, values))
    if args.markdown:
        print(f"\n| case | seeds | resampled by | covers 0 | p < 0.05 | mean width |\n|---|---:|---|---:|---:|---:|")
        for name, seeds, level, values in table:
            flag = " **(< 0.93)**" if values["coverage"] < 0.93 else ""
            print(f"| {name} | {seeds} | {'wider of the two' if level == 'wider' else level} | "
                  f"{values['coverage']:.3f}{flag} | {values['rejection']:.3f} | {values['width']:.3f} |")


if __name__ == "__main__":
    main()
