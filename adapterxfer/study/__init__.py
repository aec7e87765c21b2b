"""Studies: one plan (YAML) -> a graph of phases -> an executor -> a results database -> a report.

``adapterxfer study run PLAN.yaml [--executor local|ray|slurm] [--workers N]`` runs what is not
current, ``study status PLAN.yaml`` says what is, ``study report PLAN.yaml [--csv|--parquet]``
writes report.md and its figures (and exports the tables). Modules, in the order data flows:

- plan.py       the plan's keys (one table), validation, expansion into phases and arms;
- identity.py   a phase's identity: settings, backbone hash, inputs' manifest hashes;
- executors.py  local, ray and slurm (submitit): where a phase runs;
- runner.py     dependency order, skip / re-run, recording;
- results.py    the SQLite database (WAL; several writers);
- stats.py      seeds, seed-paired t intervals, Holm, MDE, "not learned" (baselines.py: its baselines;
                coverage.py: the simulation that checks the intervals);
- report.py, plots.py   report.md and the PNG figures.
"""
