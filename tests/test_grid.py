"""`adapterxfer grid` on the paper's plan: every cell's commands, in dependency order, all valid."""

import shlex

from adapterxfer.cli import build_parser, main
from adapterxfer.config import load_config
from adapterxfer.grid import grid_commands

PLAN = "configs/xstilts_grid.yaml"


def test_grid_lists_every_cell_in_stages(capsys):
    assert main(["grid", PLAN]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert lines == [line for line in grid_commands(PLAN) if not line.startswith("#")]
    trains = [shlex.split(line) for line in lines if line.startswith("adapterxfer train")]
    phase2 = [t for t in trains if not any(a.startswith("init_from=") for a in t)]
    intermediates = 11  # the nine tasks of the paper and the two multilingual NLI ones
    trained_targets = 8  # xnli pawsx xcopa udpos panx xquad mlqa tydiqa
    assert len(phase2) == intermediates + trained_targets  # + the baselines
    assert len(trains) - len(phase2) == intermediates * trained_targets
    outputs = {a.split("=", 1)[1] for t in phase2 for a in t if a.startswith("output_dir=")}
    for line in lines:  # phase 3 starts only from phase-2 outputs listed before it
        args = shlex.split(line)
        starts = [a.split("=", 1)[1] for a in args if a.startswith("init_from=")]
        assert all(start in outputs for start in starts)
        if args[1] == "train":
            config = load_config(args[2], args[3:])
            assert config.backbone == "xlm-roberta-large" and config.seed == 42
        else:
            build_parser().parse_args(args[1:])
    evaluated = [line for line in lines if "--task tatoeba" in line]
    assert len(evaluated) == 1 + intermediates and all("--layer 13" in line for line in evaluated)


def test_grid_rejects_an_unknown_task(tmp_path, capsys):
    plan = tmp_path / "grid.yaml"
    plan.write_text("backbone: b\nseeds: [1]\noutput_root: o\nintermediates: [mnli, nope]\n"
                    "recipes: {intermediate: configs/xstilts_intermediate.yaml}\ntargets: {}\n")
    assert main(["grid", str(plan)]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
