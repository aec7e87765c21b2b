"""``adapterxfer <verb>``: a thin layer over the library. Bad input exits 2 with one line."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from .compat import check_versions
from .config import CHOICES, FIELDS
from .errors import StudyFailed, UserError
from .regimes import EXTRAS, at_test_keys, install_hint, require_installed

EPILOG = """examples:
  adapterxfer train task=verses-xref max_steps=150 output_dir=artifacts/xref
  adapterxfer train configs/verses_genre_full.yaml init_from=artifacts/xref
  adapterxfer evaluate --model artifacts/xref --task verses-retrieval --output artifacts/xref-retrieval
  adapterxfer study run configs/demo.yaml"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adapterxfer", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Intermediate-task training (STILTs) for zero-shot cross-lingual transfer.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    train = verbs.add_parser("train", help="train one phase (intermediate, or target with init_from=...)",
                             formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_config_help(),
                             description="Train one phase: validate every input, train (resumably: run the same "
                                         "command again after a kill), save the artifact, then score target tasks "
                                         "zero-shot in every language. Keys, by section:")
    train.add_argument("args", nargs="*", metavar="[CONFIG.yaml] key=value",
                       help="an optional YAML recipe, then key=value overrides (or --key value)")

    ev = verbs.add_parser("evaluate", help="score a backbone or a trained output zero-shot on a task")
    ev.add_argument("--model", required=True, action="append",
                    help="an output folder of `train`, or a backbone (name, folder, Hub id); given several times, "
                         "LoRA outputs of one task on one backbone scored in one pass, each into OUTPUT/<its folder "
                         "name>")
    ev.add_argument("--task", required=True, help="task name (see `adapterxfer tasks`)")
    ev.add_argument("--langs", default="", help="comma-separated languages or translation ids (default: all)")
    ev.add_argument("--output", required=True, help="folder for scores.json and predictions/")
    ev.add_argument("--layer", type=int, default=-1,
                    help="retrieval: transformer layer to mean-pool, numbered as xtreme's evaluate_retrieval.py "
                         "(layer k is hidden_states[k+1]; -1 = last)")
    ev.add_argument("--max-length", type=int, default=None, help="default: the task's (128; QA 384)")
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--precision", choices=CHOICES["precision"], default="auto",
                    help="auto (default): bf16 where the device computes it natively, else fp16 on a GPU and fp32 on a CPU")
    ev.add_argument("--format", choices=["jsonl", "xtreme"], default="jsonl",
                    help="xtreme: also write xtreme/<task>/test-<lang>.* and the gold in xtreme-gold/, "
                         "the official layout `adapterxfer score` reads (default: %(default)s)")
    ev.add_argument("--scoring", default=None,
                    help="retrieval: how a query scores the targets: cosine (XTREME's Tatoeba), centered, csls, "
                         "margin, centered-csls, centered-margin; default: the task's (cosine; verses-retrieval "
                         "also reports accuracy@1_unsupervised_target_dev_centered, centered on unlabelled "
                         "target-language dev text)")
    for flag, what in (("--queries", "test queries per language"), ("--candidates", "targets in the pool, the "
                                                                                      "queries' own included")):
        ev.add_argument(flag, type=_count, default=None,
                        help=f"retrieval: {what}, a number or all; default: the task's (verses-retrieval: 300 "
                             "queries, all 2,921 English test verses as candidates)")
    for name, (regime, flag) in at_test_keys().items():
        ev.add_argument(flag, dest=name, choices=CHOICES.get(name), default=None,
                        help=f"{regime}: {FIELDS[name].metadata['help']}; default: as the model was trained")

    verbs.add_parser("tasks", help="list the tasks with their kind, languages and metric")

    arts = verbs.add_parser("artifacts", help="show or verify a trained output (manifest, sha256, lineage)",
                            description="show: summarise an output; verify: check every file's sha256, that the "
                            "parents its lineage names are still the ones it was trained from (and, with --backbone, "
                            "that it was trained on that backbone); exit 2 on a mismatch.")
    arts.add_argument("action", choices=["show", "verify"])
    arts.add_argument("folder", help="an output folder of `adapterxfer train`")
    arts.add_argument("--backbone", help="verify: the backbone the module must fit (name, folder or Hub id)")

    backbone = verbs.add_parser("backbone", help="prepare an embedded backbone or print its folder")
    backbone.add_argument("action", choices=["prepare", "path"])
    backbone.add_argument("name", help="me5-small, tiny-xlmr, a folder or a Hub id")
    backbone.add_argument("--force", action="store_true", help="prepare: rebuild even if present")

    study = verbs.add_parser("study", help="run a study plan (intermediate x target x regime x transfer x seed), "
                             "see what is done, or write its report",
                             description="A study plan (YAML, e.g. configs/demo.yaml) expands into phases: "
                                         "intermediate -> target -> evaluation. `run` runs every phase that is not "
                                         "current: a phase whose folder holds it (its identity: its config, the "
                                         "backbone hash and its inputs' manifest hashes) is recorded, never run "
                                         "again; one holding something else has it moved aside under stale/ and "
                                         "re-runs. It records results.sqlite and writes report.md with its figures; "
                                         "a phase that fails stops only what needs it (exit 1).")
    actions = study.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser("run", help="run the phases that are not current, then write the report")
    run.add_argument("plan", help="a study plan (YAML)")
    run.add_argument("--executor", choices=["local", "ray", "slurm"], default="local",
                     help="local: this machine (default); ray: a Ray task per phase (plan key ray: address, "
                          "num_cpus, num_gpus); slurm: a submitit job per phase (plan key slurm)")
    run.add_argument("--workers", type=int, default=1, help="local: phases run at once, in processes (default 1)")
    run.add_argument("--plan-changed", metavar="REASON", default=None,
                     help="run a plan changed after its confirmation; the reason goes into the report")
    run.add_argument("--then-confirm", action="store_true",
                     help="then run the plan's confirmation, as `study confirm` does, in the same process: for a "
                          "plan frozen before it explores, as `make demo`'s (both share what this process computed)")
    confirm = actions.add_parser("confirm", help="freeze the plan and run its confirmation: the confirmed contrasts "
                                                 "with new seeds, scoring the held-out test items once")
    confirm.add_argument("plan", help="a study plan (YAML) with a confirmation block")
    confirm.add_argument("--again", metavar="REASON", default=None,
                         help="confirm a second time (another plan, or items already seen); the reason is recorded "
                              "and the report labels it")
    confirm.add_argument("--executor", choices=["local", "ray", "slurm"], default="local",
                         help="as for run: local, ray or slurm")
    confirm.add_argument("--workers", type=int, default=1, help="local: phases run at once (default 1)")
    status = actions.add_parser("status", help="every phase: current, finished (recorded at the next run), to "
                                               "score, stale, failed, to run, or waiting for its inputs")
    status.add_argument("plan", help="a study plan (YAML)")
    report = actions.add_parser("report", help="write report.md and its figures from results.sqlite")
    report.add_argument("plan", help="a study plan (YAML)")
    rebuild = actions.add_parser("rebuild", help="rebuild results.sqlite from the phase outputs alone (a lost or "
                                                 "damaged one is kept beside it); runs nothing")
    rebuild.add_argument("plan", help="a study plan (YAML)")
    clean = actions.add_parser("clean", help="remove the outputs runs moved aside (stale/) and replaced database "
                                             "files, saying how much")
    clean.add_argument("plan", help="a study plan (YAML)")
    for action in (run, confirm, status, report, rebuild, clean):
        action.add_argument("--smoke", action="store_true",
                            help="the plan in miniature: every distinct phase, its first seed, a few rows per split "
                                 "and two steps, into <output>-smoke (never the real output)")
        action.add_argument("--backbone", default=None, metavar="NAME",
                            help="with --smoke: run on this backbone instead of the plan's (e.g. tiny-xlmr)")
    report.add_argument("--csv", action="store_true", help="also export the tables as export/<table>.csv")
    report.add_argument("--parquet", action="store_true", help="also export the tables as export/<table>.parquet")
    push = actions.add_parser("push", help="push every intermediate module of a finished study to the Hub")
    push.add_argument("plan", help="a study plan (YAML)")
    push.add_argument("--prefix", required=True, metavar="OWNER/NAME",
                      help="repo id prefix: each intermediate goes to OWNER/NAME-<phase key>, with its model card")
    push.add_argument("--private", action="store_true", help="create the repos private")

    score = verbs.add_parser("score", help="score XTREME / XTREME-R prediction files like the official evaluate.py",
                             description="Score <task>/test-<lang>.{tsv,json,jsonl} prediction files against label "
                                         "files in the official layout; writes the official scorer's JSON.")
    score.add_argument("--predictions", required=True, help="folder with one subfolder per task")
    score.add_argument("--labels", required=True, help="folder of gold labels, same layout")
    score.add_argument("--benchmark", choices=["xtreme", "xtreme-r"], default="xtreme", help="default: %(default)s")
    score.add_argument("--output", required=True, help="the JSON file to write")
    _push_parser(verbs)
    _select_parser(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        argv = ["train", *_as_pairs(argv[1:])]
        if {"-h", "--help"} & set(argv) and any(arg.startswith("peft_method=") for arg in argv):
            return _method_help(next(arg for arg in argv if arg.startswith("peft_method=")).partition("=")[2])
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    if args.verb not in ("tasks", "score"):
        from .cache import remove_abandoned

        for leftover in remove_abandoned():
            print(f"adapterxfer: removed {leftover}, left by a killed process", file=sys.stderr)
    try:
        check_versions()
        return VERBS[args.verb](args) or 0
    except UserError as err:
        print(f"adapterxfer: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:  # an artifact of a regime whose extra is not installed (evaluate, select)
        if err.name not in EXTRAS:
            raise
        print(f"adapterxfer: error: this {install_hint(err.name)}", file=sys.stderr)
        return 2
    except StudyFailed as err:
        print(f"adapterxfer: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("adapterxfer: interrupted; no partial output was kept (a training phase resumes from its last "
              "checkpoint when the same command runs again)", file=sys.stderr)
        return 130


def _train(args) -> None:
    from .config import load_config

    config_file = args.args[0] if args.args and "=" not in args.args[0] else None
    overrides = args.args[1:] if config_file else args.args
    config = load_config(config_file, overrides)
    from .tasks import get_task

    tasks = [get_task(name) for name in config.task.split("+")]  # names first, before the heavy libraries
    tasks[0].check_langs(config.eval_langs)
    require_installed([config.regime])
    _check_early(config)

    from .pipeline import train_phase

    out = train_phase(config)
    print(_phase_summary(out, tasks[0]))
    print(f"wrote {out}")


def _check_early(config) -> None:
    """The input errors met most often, found before torch loads (the pipeline's validation checks
    everything again): an init_from that is no artifact, an output another run is writing, an output
    that holds a run of other settings."""
    from .artifacts import is_artifact, lock_file, read_manifest
    from .config import INPUT_PATHS, RUN_ONLY, SCORING, reads
    from .locks import held

    for ref in config.init_from:
        if not ref.startswith("hf://"):
            read_manifest(ref, verify=False)
    out = config.resolved_output_dir()
    if held(lock_file(out)):
        raise UserError(f"output_dir {out} is being written by another run; wait for it or choose another "
                        "output_dir")
    if is_artifact(out) and not config.overwrite:
        ignored = set(RUN_ONLY) | set(INPUT_PATHS) | set(SCORING)  # another scoring only scores it again
        recorded = read_manifest(out, verify=False).get("config", {})
        changed = sorted(name for name, value in vars(config).items()
                         if name not in ignored and reads(config.regime, name, config.transfer) and recorded.get(name, value) != value)
        if changed:
            raise UserError(f"output_dir {out} holds another run (it differs in {', '.join(changed)}); pass "
                            "overwrite=true or another output_dir")


def _phase_summary(out: Path, task) -> str:
    """What a finished phase scored: its English dev score, and a target's zero-shot scores as a table."""
    import json

    from .artifacts import read_manifest, score_table

    dev = read_manifest(out, verify=False).get("dev", {})
    lines = [f"English dev {dev.get('metric')}: {dev.get('best'):.3f}" if dev.get("best") is not None else ""]
    if (out / "scores.json").is_file():
        lines.append(score_table(json.loads((out / "scores.json").read_text()), task.source_lang))
    return "\n".join(line for line in lines if line)


def _as_pairs(tokens: list[str]) -> list[str]:
    """``train``'s ``--max-steps 20`` / ``--max_steps=20`` as ``max_steps=20`` (a flag alone: ``=true``);
    ``-h`` and ``--help`` stay options."""
    pairs, rest = [], list(tokens)
    while rest:
        token = rest.pop(0)
        if not token.startswith("--") or token == "--help":
            pairs.append(token)
            continue
        name, sep, value = token[2:].partition("=")
        if not sep:
            value = rest.pop(0) if rest and not rest[0].startswith("--") else "true"
        pairs.append(f"{name.replace('-', '_')}={value}")
    return pairs


def _count(value: str) -> int | str:
    """A command-line size: "all" or a number (its bounds are checked with the task)."""
    return value if value == "all" else int(value)


def _evaluate(args) -> None:
    from .artifacts import score_table
    from .pipeline import evaluate_model, evaluate_models
    from .tasks import get_task

    langs = [lang.strip() for lang in args.langs.split(",") if lang.strip()]
    source = get_task(args.task).source_lang
    flags = at_test_keys()
    at_test = {name: getattr(args, name) for name in flags if getattr(args, name) is not None}
    if len(args.model) > 1:
        alone = [flag for flag, value in (("--layer", args.layer != -1), ("--scoring", args.scoring),
                                          ("--queries", args.queries), ("--candidates", args.candidates),
                                          *((flags[name][1], True) for name in at_test)) if value]
        if alone:
            raise UserError(f"{alone[0]} applies to one --model (several are LoRA outputs scored in one pass)")
        scored = evaluate_models(args.model, args.task, langs, Path(args.output), max_length=args.max_length,
                                 batch_size=args.batch_size, precision=args.precision,
                                 xtreme_format=args.format == "xtreme")
        for name, scores in scored.items():
            print(f"{name}:\n{score_table(scores, source)}")
            print(f"wrote {Path(args.output) / name}/scores.json")
        return
    scores = evaluate_model(args.model[0], args.task, langs, args.output, layer=args.layer,
                            max_length=args.max_length, batch_size=args.batch_size, precision=args.precision,
                            xtreme_format=args.format == "xtreme", at_test=at_test,
                            retrieval_scoring=args.scoring, queries=args.queries, candidates=args.candidates)
    print(score_table(scores, source))
    print(f"wrote {args.output}/scores.json")


def _tasks(args) -> None:
    from .tasks import TASKS

    for spec in TASKS.values():
        print(f"{spec.name:20} {spec.kind:16} {spec.role:12} metric={spec.metric}  {spec.description}")
        print(f"{'':20} languages ({len(spec.languages)}): {' '.join(spec.languages)}")


def _artifacts(args) -> None:
    from . import artifacts, backbones

    if args.action == "show":
        print(artifacts.describe(args.folder))
        return
    manifest = artifacts.read_manifest(args.folder)
    if args.backbone and backbones.resolve(args.backbone).weight_hash != manifest["backbone"]["weight_hash"]:
        raise UserError(f"{args.folder} was trained on backbone {manifest['backbone']['name']!r}, "
                        f"not on {args.backbone!r} (weight hashes differ)")
    changed, unchecked = artifacts.lineage_changes(Path(args.folder), manifest)
    if changed:
        raise UserError(f"{args.folder}: its lineage names {changed[0]}, which has been retrained since (its "
                        f"{artifacts.MANIFEST} is not the one recorded): this artifact was trained from the old one")
    checked = len(artifacts.input_folders(manifest)) - len(unchecked)
    print(f"{args.folder}: OK ({len(manifest['files'])} files match their sha256; lineage checked against {checked} "
          "input(s)" + (f"; not found where it was trained, so unchecked: {', '.join(unchecked)}" if unchecked else "")
          + ")")


def _backbone(args) -> None:
    from . import backbones

    if args.action == "prepare" and args.name in backbones.EMBEDDED:
        print(backbones.prepare(args.name, force=args.force))
        return
    backbone = backbones.resolve(args.name)
    print(backbone.path if args.action == "path" else f"{backbone.path}\n{backbone.weight_hash}")


def _study(args) -> None:
    from .study import runner

    if args.action == "run":
        runner.run_study(args.plan, args.executor, args.workers, args.smoke, args.backbone, args.plan_changed,
                         args.then_confirm)
    elif args.action == "confirm":
        runner.confirm_study(args.plan, args.executor, args.workers, args.again, args.smoke, args.backbone)
    elif args.action == "push":
        for key, ref in runner.push_study(args.plan, args.prefix, args.private):
            print(f"pushed {key}: {ref}")
    elif args.action == "status":
        states = runner.study_status(args.plan, args.smoke, args.backbone)
        for key, state, why in states:
            print(f"{state:8} {key}" + (f" ({why})" if why else ""))
        counts = {state: sum(s == state for _, s, _ in states) for state in runner.STATES}
        print(", ".join(f"{n} {state}" for state, n in counts.items()
                        if n or state in ("current", "stale", "to run", "waiting")))
    elif args.action == "rebuild":
        database, recorded, total = runner.rebuild_study(args.plan, args.smoke, args.backbone)
        rest = f"; `adapterxfer study run {args.plan}` runs the other {total - recorded}" if recorded < total else ""
        print(f"rebuilt {database} from the phase outputs: {recorded} of {total} phases recorded{rest}")
    elif args.action == "clean":
        moved, databases, megabytes = runner.clean_study(args.plan, args.smoke, args.backbone)
        print(f"removed {moved} output(s) moved aside under stale/ and {databases} replaced database(s): "
              f"{megabytes:.1f} MB" if moved or databases else "nothing moved aside to remove")
    else:
        _study_report(args)


def _study_report(args) -> None:
    from . import backbones
    from .study import plan as plans
    from .study.report import write_report
    from .study.results import FILE, Results
    from .study.runner import phase_states

    plan = plans.load_plan(args.plan, args.smoke, args.backbone)
    root, graph = plans.study_root(plan), plans.expand(plan)
    if not (root / FILE).is_file():
        raise UserError(f"{root / FILE} does not exist; run `adapterxfer study run {args.plan}` first")
    results = Results(root / FILE, args.plan)
    states = phase_states(graph, root, backbones.resolve(plan["backbone"]).weight_hash, results)
    print(f"wrote {write_report(plan, graph, results, root, states)}")
    for fmt in ("csv", "parquet"):
        if getattr(args, fmt):
            print("wrote " + ", ".join(map(str, results.export(root / "export", fmt))))


def _score(args) -> None:
    from .scoring import format_summary, score_folders, write_scores

    scores = score_folders(args.predictions, args.labels, args.benchmark)
    write_scores(scores, args.output)
    print(format_summary(scores))
    print(f"wrote {args.output}")


VERBS = {"artifacts": _artifacts, "train": _train, "evaluate": _evaluate, "tasks": _tasks, "backbone": _backbone,
         "study": _study, "score": _score}


def _method_help(method: str) -> int:
    """``train --help peft_method=NAME``: that peft method's own fields (regime peft)."""
    from .regimes.peft import method_help

    try:
        print(method_help(method))
    except UserError as err:
        print(f"adapterxfer: error: {err}", file=sys.stderr)
        return 2
    return 0


def _config_help() -> str:
    from .config import help_text
    return help_text()


def _push_parser(verbs) -> None:
    push = verbs.add_parser("push", help="share a trained output on the Hugging Face Hub, with a model card",
                            description="Upload an output folder (module, head, manifest; a madx task adapter with "
                                        "its language adapters) and a generated model card in one commit. "
                                        "Use it anywhere as init_from=hf://REPO_ID@COMMIT (also lang_adapters=, "
                                        "evaluate --model): it is pulled, pinned and verified.")
    push.add_argument("folder", metavar="DIR", help="an output folder of `adapterxfer train`")
    push.add_argument("repo_id", metavar="REPO_ID", help="OWNER/NAME on the Hub (created if needed)")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", metavar="BRANCH", default=None, help="commit to this branch (default: main)")
    push.add_argument("--license", default="other", help="the card's license id (default: %(default)s)")


def _push(args) -> None:
    from .sharing import push_artifact

    commit = push_artifact(args.folder, args.repo_id, private=args.private, revision=args.revision,
                           license=args.license)
    print(f"pushed {args.folder} to {commit.commit_url}")
    print(f"use it as hf://{args.repo_id}@{commit.oid}")


VERBS["push"] = _push


def _select_parser(verbs) -> None:
    select = verbs.add_parser("select", help="rank a bank of intermediate modules for a target without training on it",
                              description="Rank the bank's intermediate modules for a target, and for each of its "
                                          "languages, with cheap proxies on a small sample: logme (LogME of the "
                                          "English training labels on each module's features), probe (English dev "
                                          "accuracy of a linear head on those features), semb (cosine of mean "
                                          "backbone embeddings of the intermediate's and the target's text). Prints "
                                          "each proxy's score, rank and seconds per module.")
    select.add_argument("--target", required=True,
                        help="target task, or several comma-separated (see `adapterxfer tasks`): the backbone loads "
                             "once and what the targets share (the intermediates' embeddings) is computed once")
    select.add_argument("--langs", default="", help="comma-separated languages to rank for (default: every zero-shot "
                                                    "language of the target)")
    select.add_argument("--bank", required=True, metavar="SOURCE",
                        help="a folder of artifacts (every intermediate output under it), a study plan (YAML) whose "
                             "intermediate phases have run (the result is also kept for `study report`), or "
                             "comma-separated hf://OWNER/NAME@COMMIT refs")
    select.add_argument("--unlabelled-target-text", action="store_true",
                        help="let proxies read unlabelled target-language dev text (semb per language); the result "
                             "records it: no longer strictly zero-shot selection. Labels are never read")
    select.add_argument("--sample", type=int, default=None,
                        help="examples per sample: English training and dev examples, texts per embedding "
                             "(default: 128)")
    select.add_argument("--logme-reference", action="store_true",
                        help="compute LogME by the reference implementation's formula (thuml/LogME, as ESM-LogME "
                             "uses it), for comparison with published rankings; it differs from the exact evidence "
                             "where the sample has fewer examples than feature dimensions (select says so)")
    select.add_argument("--json", metavar="FILE", default=None,
                        help="also write the result as JSON to FILE: a list, one entry per target")


def _select(args) -> None:
    from .selection import SAMPLE, select, table, write_json

    langs = [lang.strip() for lang in args.langs.split(",") if lang.strip()]
    sample = SAMPLE if args.sample is None else args.sample
    if sample < 2:
        raise UserError(f"--sample {sample}: must be at least 2")
    targets = [target.strip() for target in args.target.split(",") if target.strip()]
    results = select(targets, langs, args.bank, args.unlabelled_target_text, sample,
                     logme_reference=args.logme_reference)
    print("\n\n".join(map(table, results)))
    if args.json:
        write_json(results, Path(args.json))
        print(f"wrote {args.json}")


VERBS["select"] = _select


def _quiet_libraries() -> None:
    """Library chatter (expected 'newly initialized head' warnings) would bury our own output.
    Set through the environment, which transformers reads when (and only if) it is imported."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)


if __name__ == "__main__":
    sys.exit(main())
