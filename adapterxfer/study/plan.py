"""A study plan (YAML) -> a graph of phases: intermediate -> target -> evaluation.

The plan's keys are one table (``KEYS``: type, default, help); ``read_plan`` checks every key,
block, task, regime, transfer and contrast before anything trains, and ``expand`` turns the plan
into ``Phase`` objects (each one ``train_phase`` or one ``evaluate_model`` call, in its own folder
under the study root) and ``Arm`` objects (what the report compares: one regime, one target, one
way of starting from the intermediates, a phase per seed).

Folder layout under the study root::

    seed<s>/<regime>/<intermediate>            an intermediate phase (a+b: multi-task)
    seed<s>/<regime>/<target>/<arm>.<stage>    a stage of the target's recipe (xcopa: siqa), trained
                                               between the arm's start and the target phase
    seed<s>/<regime>/lang/<lang>               a language phase the regime's phases stack on (MAD-X:
                                               a language adapter; ``Regime.language_phases``)
    seed<s>/<regime>/<target>/<arm>            a target phase, or the evaluation of an intermediate
                                               on an evaluation-only target; <arm>.<ablation>: one of
                                               the regime's ablations (MAD-X: source-adapter)
    backbone/<target>                          the untuned backbone on an evaluation-only target
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import fields, replace
from functools import lru_cache
from pathlib import Path

from .. import backbones, merges
from ..config import CHOICES, FIELDS, INPUT_PATHS, from_dict, owners, read_yaml, reads
from ..errors import UserError, unknown
from ..merges import METHODS, MergeKeys
from ..regimes import DEFAULT as DEFAULT_REGIME, NAMES as REGIME_NAMES, all_regimes, get_regime
from ..tasks import get_task
from ..transfers import TRANSFERS
from ..shares import LEVELS
from .phases import BASELINE, Arm, Graph, Phase

REQUIRED = object()
HELD_OUT = 0.5  # confirmation.held_out's default
# `study run --smoke`: every phase's train keys over the plan's own; budgets that still pass every code path.
SMOKE_PHASE = {"max_steps": 2, "eval_every": 2, "checkpoint_every": 2, "batch_size": 2, "grad_accum": 1,
               "eval_batch_size": 8, "probe_examples": 4, "rows_per_split": 8}
SMOKE_SUFFIX = "-smoke"

# key: (type, default, help). Blocks of `train` keys are checked by adapterxfer.config.from_dict.
KEYS = {
    "description": (str, "", "one line on what the study is; the report's first line"),
    "backbone": (str, REQUIRED, "backbone of every phase: an embedded name, a folder or a Hub id"),
    "output": (str, None, "the study folder (default: artifacts/<plan file name>)"),
    "seeds": (list, REQUIRED, "training seeds; every phase runs once per seed (the seed-level sample)"),
    "targets": (list, REQUIRED, "target tasks of any kind; evaluation-only ones (retrieval, mining, ranking) "
                                "are scored from the backbone and from each intermediate"),
    "intermediates": (list, [], "intermediate tasks; a+b trains a and b together (multi-task), e.g. mnli+wiki-mlm"),
    "regime_seeds": (dict, {}, "regime -> the seeds it runs, a subset of seeds (default: every seed), e.g. fewer "
                               "for a costly regime; contrasts pair the seeds two arms share"),
    "intermediate_regimes": (dict, {}, "intermediate task -> the regimes it trains in (default: every regime "
                                       "that uses intermediates); a regime that combines them needs them all"),
    "regimes": (list, [DEFAULT_REGIME], f"regimes ({', '.join(REGIME_NAMES)}) or variants; each runs every arm it "
                                        "supports"),
    "variants": (dict, {}, "name -> {regime, train keys}: a regime under its own name with its own keys, run where "
                           "regimes lists the name, beside the regime itself (e.g. dora: {regime: peft, peft_method: "
                           "lora, peft: {use_dora: true}}); it shares its regime's block"),
    "transfers": (dict, None, "transfer -> regimes it runs in; transfers: sequential (one arm per intermediate), "
                              "stack (idem), fusion, merge, multitask (one arm over all intermediates), "
                              "arithmetic (one arm arithmetic(<arm>) over each arm whose module is plain, the "
                              "baseline's included: its task module + each test language's difference from "
                              "English, nothing trained); default: sequential in every regime"),
    "merges": (dict, {}, "name -> merge keys (merge: the method, default the name; merge_weights, merge_normalize, "
                         "merge_density): one arm merge-<name>(a+b) each where transfers.merge runs; default: one "
                         "arm merge(a+b) with the phases' own merge keys"),
    "multitask": (dict, {}, "name -> intermediates of the plan that transfer multitask trains together, one "
                            "arm multitask(<name>) each; default: one over all the intermediates, named a+b+..."),
    **{regime.name: (dict, {}, f"regime {regime.name}: "
                     + ", ".join(f"{key} ({help})" for key, help in regime.plan_keys.items()))
       for regime in all_regimes() if regime.plan_keys},
    "phase": (dict, {}, "train keys of every phase"),
    "intermediate_phase": (dict, {}, "train keys of intermediate phases (over phase)"),
    "target_phase": (dict, {}, "train keys of target phases (over phase); eval_langs: the zero-shot languages"),
    "task_phase": (dict, {}, "task -> train keys of its phases (over the above)"),
    "regime_phase": (dict, {}, "regime -> train keys of its phases (over all the above)"),
    "evaluation": (dict, {}, "evaluation-only targets: layer, max_length, batch_size, langs, precision, regimes "
                             "(whose intermediates are scored; default all), queries and candidates (retrieval: "
                             "test queries per language and pool size, a number or all; default the task's), "
                             "secondary (retrieval: false leaves out the task's secondary scores, such as "
                             "verses-retrieval's centered on target-language dev text; default true)"),
    "clusters": (dict, {}, "target -> item | chapter | book: the unit test items err together in "
                           "(chapter and book: verses refs book:chapter:verse); default item"),
    "contrasts": (list, [], "[{name, target, run, versus, primary}]: run and versus are arms 'regime/arm' "
                            "(arm: baseline, an intermediate, stack(i), fusion(a+b), merge(a+b), multitask(a+b), "
                            "arithmetic(<arm>)); "
                            "exactly one has primary: true; the others are Holm-corrected"),
    "statistics": (dict, {}, "alpha (0.05), power (0.8) and the effect of interest (0.01) of the contrasts"),
    "confirmation": (dict, {}, "a held-out confirmation (`study confirm`): seeds (new ones, none of seeds), "
                               "held_out (the share of each target's test clusters that only the confirmation "
                               "scores; default 0.5), by (item | chapter | book: what the share is drawn by; "
                               "default each target's clusters), contrasts (names; default the primary)"),
    "ray": (dict, {}, "executor ray: address (default: a local cluster), num_cpus (1), num_gpus (0) per phase"),
    "slurm": (dict, {}, "executor slurm: cluster (slurm; local or debug run on this machine) and submitit's "
                        "parameters, e.g. slurm_partition, gpus_per_node, cpus_per_task, timeout_min, mem_gb"),
}
BLOCK_KEYS = {
    **{regime.name: set(regime.plan_keys) for regime in all_regimes() if regime.plan_keys},
    "evaluation": {"layer", "max_length", "batch_size", "langs", "precision", "regimes", "queries", "candidates",
                   "secondary"},
    "statistics": {"alpha", "power", "effect"},
    "confirmation": {"seeds", "held_out", "by", "contrasts"},
    "contrasts": {"name", "target", "run", "versus", "primary"},
    "ray": {"address", "num_cpus", "num_gpus"},
}


def read_plan(plan_file: str) -> dict:
    """The plan with defaults filled in; any problem is one UserError naming the key."""
    raw = read_yaml(plan_file)
    for key in raw:
        if key not in KEYS:
            raise UserError(f"{plan_file}: " + unknown("key", key, KEYS))
    plan = {}
    for key, (kind, default, _) in KEYS.items():
        if key not in raw and default is REQUIRED:
            raise UserError(f"{plan_file}: key {key!r} is required ({KEYS[key][2]})")
        value = raw.get(key, default)
        if value is not None and not isinstance(value, kind):
            raise UserError(f"{plan_file}: key {key!r} expects a {kind.__name__}, got {value!r}")
        plan[key] = value
    plan["file"] = plan_file
    plan["transfers"] = plan["transfers"] or {"sequential": list(plan["regimes"])}
    _check(plan)
    expand(plan)  # builds every phase's RunConfig: a typo in a block fails now, not after hours
    return plan


def study_root(plan: dict) -> Path:
    return Path(plan["output"] or Path("artifacts") / Path(plan["file"]).stem)


def load_plan(plan_file: str, smoke: bool = False, backbone: str | None = None) -> dict:
    """The plan, or its smoke version (``smoke_plan``); ``backbone`` overrides only a smoke run's."""
    if backbone is not None and not smoke:
        raise UserError(f"--backbone {backbone} replaces the backbone of a smoke run only; add --smoke "
                        f"(a real run keeps the plan's backbone: {plan_file})")
    plan = read_plan(plan_file)
    return smoke_plan(plan, backbone) if smoke else plan


def smoke_plan(plan: dict, backbone: str | None = None) -> dict:
    """Every distinct phase of the plan in miniature: its first seed, ``SMOKE_PHASE`` budgets, a few rows per
    split, into ``<output>-smoke`` (never the real output), on ``backbone`` or the plan's own. Another
    backbone may lack the plan's evaluation layer (13 of XLM-R large's 24): its smoke scores the last, and
    its frozen bottom is cut to leave one layer to train."""
    other = backbone is not None and backbone != plan["backbone"]
    smoke = {**deepcopy(plan), "seeds": plan["seeds"][:1], "regime_seeds": {}, "backbone": backbone or plan["backbone"],
             "output": f"{study_root(plan)}{SMOKE_SUFFIX}", "smoke": True,
             "evaluation": {**plan["evaluation"], **({"layer": -1} if other else {})}}
    if other:
        _cut_frozen(smoke, backbones.resolve(backbone).layers - 1)
    _check(smoke)
    expand(smoke)
    return smoke


def _cut_frozen(plan: dict, most: int) -> None:
    """``frozen_layers`` of every train block at most ``most``."""
    blocks = [plan[name] for name in ("phase", "intermediate_phase", "target_phase") if name in plan]
    blocks += [block for name in ("task_phase", "regime_phase") for block in plan.get(name, {}).values()]
    for block in blocks:
        if block.get("frozen_layers", 0) > most:
            block["frozen_layers"] = most


def _check(plan: dict) -> None:
    where = plan["file"]
    if not plan["seeds"] or not all(isinstance(s, int) and not isinstance(s, bool) for s in plan["seeds"]):
        raise UserError(f"{where}: key 'seeds' must be a non-empty list of integers, got {plan['seeds']!r}")
    if len(set(plan["seeds"])) != len(plan["seeds"]):
        raise UserError(f"{where}: key 'seeds' lists a seed twice: {plan['seeds']!r}")
    for key, role in (("targets", "target"), ("intermediates", "intermediate")):
        for name in plan[key]:
            for part in name.split("+") if key == "intermediates" else [name]:
                if get_task(part).role != role:
                    raise UserError(f"{where}: {key}: {part} is a {get_task(part).role} task; {key} lists {role} "
                                    f"tasks")
    if not plan["targets"]:
        raise UserError(f"{where}: key 'targets' must name at least one target task")
    _check_variants(plan)
    for regime in plan["regimes"]:
        _regime(plan, regime)
    _check_output(plan)
    for name, block in plan.items():
        if name in BLOCK_KEYS and name != "contrasts":
            _check_keys(f"{where}: {name}", block, BLOCK_KEYS[name])
    _check_transfers(plan)
    for task, regimes in plan["intermediate_regimes"].items():
        if task not in plan["intermediates"] or not isinstance(regimes, list) or not set(regimes) <= set(plan["regimes"]):
            raise UserError(f"{where}: intermediate_regimes: {task}: {regimes!r} must map an intermediate of the plan "
                            f"({', '.join(plan['intermediates'])}) to a list of its regimes ({', '.join(plan['regimes'])})")
    for regime, seeds in plan["regime_seeds"].items():
        if regime not in plan["regimes"] or not isinstance(seeds, list) or not seeds or not set(seeds) <= set(plan["seeds"]):
            raise UserError(f"{where}: regime_seeds: {regime}: {seeds!r} must map a regime of the plan "
                            f"({', '.join(plan['regimes'])}) to a non-empty list of its seeds ({plan['seeds']})")
    _check_multitask(plan)
    _check_merges(plan)
    for regime in plan["regimes"]:
        _regime(plan, regime).check_plan(_block(plan, regime), where)
    for target, level in plan["clusters"].items():
        if target not in plan["targets"] or level not in LEVELS:
            raise UserError(f"{where}: clusters: {target}: {level} must map a target of the plan "
                            f"({', '.join(plan['targets'])}) to one of {', '.join(LEVELS)}")
    for block in ("task_phase", "regime_phase"):
        for name, settings in plan[block].items():
            if not isinstance(settings, dict):
                raise UserError(f"{where}: {block}.{name} must be a mapping of train keys, got {settings!r}")
    _check_regime_keys(plan)
    _check_confirmation(plan)


def _check_regime_keys(plan: dict) -> None:
    """A regime's key in a block for every regime applies to that regime's phases only, so its regime must be
    one the plan runs; a block for one regime takes the general keys and that regime's own."""
    where = plan["file"]
    shared = {"phase": plan["phase"], "intermediate_phase": plan["intermediate_phase"],
              "target_phase": plan["target_phase"], **{f"task_phase.{t}": b for t, b in plan["task_phase"].items()}}
    for name, block in shared.items():
        for key in _with_recipe(plan, block):
            regimes = owners(key)
            if regimes and not set(regimes) & {_base(plan, regime) for regime in plan["regimes"]}:
                raise UserError(f"{where}: {name}: key {key!r} belongs to regime {' and '.join(regimes)}, which the "
                                f"plan does not run (regimes: {', '.join(plan['regimes'])})")
    own = {f"regime_phase.{regime}": (_base(plan, regime), block) for regime, block in plan["regime_phase"].items()}
    own |= {f"variants.{name}": (_base(plan, name), _variant_keys(plan, name)) for name in plan["variants"]}
    own |= {f"{regime}.phase": (_base(plan, regime), _regime(plan, regime).language_phases(_block(plan, regime))[1])
            for regime in plan["regimes"] if _regime(plan, regime).language_phases(_block(plan, regime))}
    for name, (regime, block) in own.items():
        for key in _with_recipe(plan, block):
            if key in FIELDS and not reads(regime, key):
                raise UserError(f"{where}: {name}: key {key!r} belongs to regime {' and '.join(owners(key))}, not "
                                f"{regime}")


def _check_confirmation(plan: dict) -> None:
    where, block = plan["file"], plan["confirmation"]
    if not block:
        return
    seeds = block.get("seeds")
    if not seeds or not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds) or len(set(seeds)) != len(seeds):
        raise UserError(f"{where}: confirmation.seeds must be a non-empty list of distinct integers, got {seeds!r}")
    reused = sorted(set(seeds) & set(plan["seeds"]))
    if reused:
        raise UserError(f"{where}: confirmation.seeds reuses the exploration's seeds {reused}: a confirmation runs new "
                        f"seeds (none of seeds: {plan['seeds']})")
    held_out = block.get("held_out", HELD_OUT)
    if isinstance(held_out, bool) or not isinstance(held_out, (int, float)) or not 0 < held_out < 1:
        raise UserError(f"{where}: confirmation.held_out must be a share between 0 and 1, got {held_out!r}")
    if block.get("by", "item") not in LEVELS:
        raise UserError(f"{where}: confirmation.by must be one of {', '.join(LEVELS)}, got {block['by']!r}")
    names = [c.get("name") for c in plan["contrasts"] if isinstance(c, dict)]
    chosen = block.get("contrasts")
    if chosen is None and not names:
        raise UserError(f"{where}: confirmation confirms contrasts; the plan declares none (key 'contrasts')")
    unknown = [name for name in chosen or [] if name not in names]
    if chosen is not None and (not isinstance(chosen, list) or not chosen or unknown):
        raise UserError(f"{where}: confirmation.contrasts must list contrasts of the plan ({', '.join(names)}), "
                        f"got {chosen!r}")


def _check_output(plan: dict) -> None:
    root = study_root(plan)
    blocking = next((folder for folder in (root, *root.parents) if folder.exists() and not folder.is_dir()), None)
    if blocking is not None:
        raise UserError(f"{plan['file']}: key 'output': {root} lies under {blocking}, which is a file, not a folder")


def _check_keys(where: str, block, allowed: set) -> None:
    if not isinstance(block, dict):
        raise UserError(f"{where} must be a mapping with keys {', '.join(sorted(allowed))}, got {block!r}")
    for key in block:
        if key not in allowed:
            raise UserError(f"{where}: " + unknown("key", key, sorted(allowed)))


def _check_transfers(plan: dict) -> None:
    where = plan["file"]
    for transfer, regimes in plan["transfers"].items():
        if transfer not in TRANSFERS:
            raise UserError(f"{where}: transfers: " + unknown("transfer", transfer, TRANSFERS))
        if not isinstance(regimes, list):
            raise UserError(f"{where}: transfers.{transfer} must list regimes, got {regimes!r}")
        for regime in regimes:
            if regime not in plan["regimes"]:
                raise UserError(f"{where}: transfers.{transfer}: {regime} is not a regime of the plan "
                                f"({', '.join(plan['regimes'])})")
            offered = _regime(plan, regime).transfers
            if transfer not in offered:
                raise UserError(f"{where}: transfers.{transfer}: regime {regime} does not offer it "
                                f"(it offers {', '.join(offered)})")
        for regime in regimes if not TRANSFERS[transfer].trains else []:
            if _regime(plan, regime).language_phases(_block(plan, regime)) is None:
                keys = ", ".join(_regime(plan, regime).plan_keys)
                raise UserError(f"{where}: transfers.{transfer} needs language modules, and regime {regime} trains "
                                f"none: give it its block {regime}: {{{keys}}}")
        if TRANSFERS[transfer].combines and regimes and len(plan["intermediates"]) < 2 and not (
                TRANSFERS[transfer].joint and plan["multitask"]):
            raise UserError(f"{where}: transfers.{transfer} combines intermediates; the plan lists "
                            f"{len(plan['intermediates'])}")
        for regime in regimes if TRANSFERS[transfer].combines and not TRANSFERS[transfer].joint else []:
            absent = [task for task in plan["intermediates"] if not _trains_in(plan, task, regime)]
            if absent:
                raise UserError(f"{where}: transfers.{transfer} combines every intermediate in regime {regime}; "
                                f"intermediate_regimes leaves out {', '.join(absent)}")


def _check_multitask(plan: dict) -> None:
    """Each named multi-task set lists two or more of the plan's intermediates; a joint a+b intermediate
    needs regimes that train tasks together."""
    where, names = plan["file"], plan["intermediates"]
    for name, members in plan["multitask"].items():
        if not isinstance(members, list) or len(members) < 2 or not set(members) <= set(names):
            raise UserError(f"{where}: multitask.{name} must list two or more intermediates of the plan "
                            f"({', '.join(names)}), got {members!r}")
    joint = [name for name in names if "+" in name]
    for regime in plan["regimes"] if joint else []:
        if not _regime(plan, regime).multitask:
            raise UserError(f"{where}: intermediates: {joint[0]} trains tasks together, which regime {regime} does "
                            f"not offer (drop the regime or the joint intermediate)")


def _check_variants(plan: dict) -> None:
    """Each variant names a regime (not another variant) under a name no regime has; its keys are checked with
    every phase's (``expand``)."""
    where = plan["file"]
    for name, variant in plan["variants"].items():
        if name in REGIME_NAMES or not isinstance(variant, dict) or variant.get("regime") not in REGIME_NAMES:
            raise UserError(f"{where}: variants.{name}: a variant is a new name (not one of the regimes "
                            f"{', '.join(REGIME_NAMES)}) mapped to {{regime: one of them, train keys}}, got {variant!r}")


def _base(plan: dict, name: str) -> str:
    """The regime a plan's regime ``name`` runs: a variant's, else ``name`` itself."""
    variant = plan["variants"].get(name)
    return variant["regime"] if variant else name


def _regime(plan: dict, name: str):
    return get_regime(_base(plan, name))


def _variant_keys(plan: dict, name: str) -> dict:
    """The train keys a variant sets over its regime's ({} for a regime itself)."""
    return {key: value for key, value in plan["variants"].get(name, {}).items() if key != "regime"}


MERGE_KEYS = {spec.name for spec in fields(MergeKeys)}  # what a named merge may set


def _check_merges(plan: dict) -> None:
    """Named merges need transfers.merge, merge keys only, and a name that can be a folder's."""
    where = plan["file"]
    if plan["merges"] and not plan["transfers"].get("merge"):
        raise UserError(f"{where}: merges names merge arms; add the regimes they run in to transfers.merge")
    for name, keys in plan["merges"].items():
        if not name.replace("_", "").isalnum():
            raise UserError(f"{where}: merges.{name}: a merge's name is letters, digits and _ (it names a folder)")
        _check_keys(f"{where}: merges.{name}", keys, MERGE_KEYS)
        if keys.get("merge", name) not in METHODS:
            raise UserError(f"{where}: merges.{name}: " + unknown("merge", keys.get("merge", name), METHODS))


def _merge_keys(plan: dict, transfer) -> dict[str | None, dict]:
    """A transfer's arms' own keys: merge name -> its merge keys for transfer merge with named merges, else
    {None: {}} (one arm, the phases' keys)."""
    if transfer.name != "merge" or not plan["merges"]:
        return {None: {}}
    return {name: {"merge": name, **keys} for name, keys in plan["merges"].items()}


def multitask_sets(plan: dict) -> dict[str, list[str]]:
    """Arm name -> the intermediates transfer multitask trains together (default: all, named a+b+...)."""
    return plan["multitask"] or {"+".join(plan["intermediates"]): list(plan["intermediates"])}


def _arm_groups(plan: dict, transfer, names: list[str]) -> dict[str, list[str]]:
    """Arm label -> the intermediates (of ``names``, those this regime trains) one target arm of ``transfer``
    starts from."""
    if transfer.joint:
        return multitask_sets(plan)
    if transfer.combines:
        return {"+".join(names): list(names)}
    return {task: [task] for task in names}


def expand(plan: dict) -> Graph:
    """Every phase and arm of the plan; train settings are validated RunConfig dicts."""
    graph = Graph()
    for seed in plan["seeds"]:
        for regime in [r for r in plan["regimes"] if seed in plan["regime_seeds"].get(r, plan["seeds"])]:
            languages = _language_phases(plan, graph, regime, seed)
            intermediates = _intermediates(plan, graph, regime, seed, languages)
            for target in plan["targets"]:
                if get_task(target).trainable:
                    _target_arms(plan, graph, regime, seed, target, intermediates, languages)
                else:
                    _evaluation_arms(plan, graph, regime, seed, target, intermediates)
    _check_contrasts(plan, graph)
    return graph


CONFIRM = "confirm/"  # the folder of a confirmation's phases under the study root


def confirmed_contrasts(plan: dict) -> list[dict]:
    """The contrasts a confirmation confirms (``contrasts``: the plan's primary by default), the primary first."""
    names = plan["confirmation"].get("contrasts") or [c["name"] for c in contrasts(plan) if c["primary"]]
    chosen = [c for c in contrasts(plan) if c["name"] in names]
    return [{**c, "primary": index == 0} for index, c in enumerate(chosen)]


def expand_confirmation(plan: dict) -> Graph:
    """The phases a confirmation runs, under ``confirm/``: the confirmed contrasts' arms and the phases they start
    from, once per confirmation seed, each scoring its target's held-out share of the test items."""
    block = plan["confirmation"]
    chosen = confirmed_contrasts(plan)
    graph = expand({**plan, "seeds": block["seeds"], "regime_seeds": {}, "part": "confirm", "contrasts": chosen})
    wanted = {(contrast[side], contrast["target"]) for contrast in chosen for side in ("run", "versus")}
    arms = [arm for arm in graph.arms if (arm.label, arm.target) in wanted]
    needed: set[str] = set()
    frontier = [key for arm in arms for key in arm.keys.values()]
    while frontier:
        key = frontier.pop()
        if key not in needed:
            needed.add(key)
            frontier += graph.phases[key].deps
    moved = lambda key: CONFIRM + key
    return Graph({moved(key): replace(phase, key=moved(key), init_from=tuple(map(moved, phase.init_from)),
                                      stacks_on=tuple(map(moved, phase.stacks_on)),
                                      lang_modules=tuple(map(moved, phase.lang_modules)),
                                      model=phase.model and moved(phase.model))
                  for key, phase in graph.phases.items() if key in needed},
                 [replace(arm, keys={seed: moved(key) for seed, key in arm.keys.items()}) for arm in arms])


def share_keys(plan: dict, target: str) -> dict:
    """The keys that make a phase score its share of the target's test items (adapterxfer/shares.py): the
    exploration share in a plan with a confirmation, the held-out one in the confirmation; none without."""
    block = plan["confirmation"]
    if not block:
        return {}
    return {"test_share": plan.get("part", "explore"), "held_out": block.get("held_out", HELD_OUT),
            "held_out_by": block.get("by", plan["clusters"].get(target, "item"))}


def transfers_in(plan: dict, regime: str) -> list[str]:
    return [t for t, regimes in plan["transfers"].items() if regime in regimes]


def _block(plan: dict, regime: str) -> dict:
    """The plan's block named after ``regime``, a variant's regime's ({} where the regime has none)."""
    return plan.get(_base(plan, regime)) or {}


def ablation_arm(arm: str, name: str) -> str:
    return f"{arm} [{name}]"


def is_ablation(arm: str) -> bool:
    return arm.endswith("]")


def _language_phases(plan, graph, regime, seed) -> list[str]:
    """The regime's language phases (``Regime.language_phases``): one per training and zero-shot language of
    every target, the source language's first; none in most regimes."""
    if _regime(plan, regime).language_phases(_block(plan, regime)) is None:
        return []
    langs = {}
    for target in plan["targets"]:
        task = get_task(target)
        if task.trainable:
            config = from_dict(_settings(plan, "target", target, regime) | {"task": target, "regime": regime},
                               source=plan["file"])
            langs |= dict.fromkeys([task.train_lang, *task.check_langs(config.eval_langs)])
    name, _ = _regime(plan, regime).language_phases(_block(plan, regime))
    return [graph.add(_train(plan, f"seed{seed}/{regime}/lang/{lang}", "language", name, regime, seed,
                             language=lang)) for lang in langs]


def _intermediates(plan, graph, regime, seed, languages) -> dict[str, str]:
    """Intermediate task (a+b for multi-task) -> phase key, for the transfers this regime runs."""
    used = transfers_in(plan, regime)
    evaluated = any(not get_task(t).trainable for t in plan["targets"]) and regime in _evaluated_regimes(plan)
    tasks = ([task for task in plan["intermediates"] if _trains_in(plan, task, regime)]
             if (any(not TRANSFERS[t].joint for t in used) or evaluated) else [])
    if any(TRANSFERS[t].joint for t in used):
        tasks += ["+".join(members) for members in multitask_sets(plan).values()]
    return {task: graph.add(_train(plan, f"seed{seed}/{regime}/{task}", "intermediate", task, regime, seed,
                                   stacks_on=tuple(languages)))
            for task in dict.fromkeys(tasks)}


def _trains_in(plan: dict, task: str, regime: str) -> bool:
    return regime in plan["intermediate_regimes"].get(task, plan["regimes"])


def _target_arms(plan, graph, regime, seed, target, intermediates, languages) -> None:
    names = [task for task in plan["intermediates"] if task in intermediates]
    # arm -> (init_from keys, transfer, intermediate tasks, the arm's own train keys)
    starts = {BASELINE: ((), "sequential", (), {})}
    transfers = [TRANSFERS[name] for name in transfers_in(plan, regime)]
    for transfer in [transfer for transfer in transfers if transfer.trains]:
        for label, group in _arm_groups(plan, transfer, names).items():
            tasks = ("+".join(group),) if transfer.joint else tuple(group)
            for name, keys in _merge_keys(plan, transfer).items():
                starts[transfer.arm([label], name)] = (tuple(intermediates[t] for t in tasks),
                                                       transfer.phase_transfer, tasks, keys)
    for arm, (init_from, transfer, tasks, keys) in starts.items():
        folder = f"seed{seed}/{regime}/{target}/{_slug(arm)}"
        init_from, transfer = _stages(plan, graph, folder, target, regime, seed, init_from, transfer, languages, keys)
        key = graph.add(_train(plan, folder, "target", target, regime, seed, init_from=init_from,
                               transfer=transfer, stacks_on=tuple(languages), arm=arm, keys=keys))
        _add_arm(graph, regime, target, arm, seed, key, tasks)
        for composing in [t for t in transfers if not t.trains] if TRANSFERS[transfer].swappable else []:
            name = composing.arm([arm])
            composed = graph.add(_train(plan, f"seed{seed}/{regime}/{target}/{_slug(name)}", "target", target, regime,
                                        seed, init_from=(key,), transfer=composing.name,
                                        lang_modules=tuple(languages), arm=name))
            _add_arm(graph, regime, target, name, seed, composed, tasks)
        for name, overrides in _regime(plan, regime).ablations(_block(plan, regime)).items():
            trained = graph.phases[key]
            settings = {"task": target, "langs": trained.settings["eval_langs"],
                        "max_length": trained.settings["max_length"],
                        "batch_size": trained.settings["eval_batch_size"],
                        "precision": trained.settings["precision"], **overrides, **_smoke_rows(plan)}
            ablation = graph.add(Phase(f"{key}.{_slug(name)}", "evaluate", "evaluation", target, settings, seed,
                                       regime, target, ablation_arm(arm, name), model=key))
            _add_arm(graph, regime, target, ablation_arm(arm, name), seed, ablation, tasks)


def _stages(plan, graph, folder, target, regime, seed, init_from, transfer, languages, keys) -> tuple[tuple, str]:
    """The target recipe's stages (``TaskSpec.stages``, xcopa: siqa), each a phase ``<folder>.<stage>`` that
    starts from the one before (the first from the arm's start, by its transfer); returns the target
    phase's (init_from, transfer): sequential from the last stage, or the arm's own start without stages."""
    for stage in get_task(target).stages:
        key = graph.add(_train(plan, f"{folder}.{stage}", "stage", stage, regime, seed, init_from=init_from,
                               transfer=transfer, stacks_on=tuple(languages), keys=keys))
        init_from, transfer = (key,), "sequential"
    return init_from, transfer


def _evaluation_arms(plan, graph, regime, seed, target, intermediates) -> None:
    """An evaluation-only target: the untuned backbone (baseline) and each intermediate's encoder."""
    evaluation = plan["evaluation"]
    settings = {"task": target, "langs": [str(lang) for lang in evaluation.get("langs", [])],
                "layer": evaluation.get("layer", -1), "max_length": evaluation.get("max_length"),
                "batch_size": evaluation.get("batch_size", 32),
                "precision": evaluation.get("precision", plan["phase"].get("precision", "auto")),
                **{key: evaluation[key] for key in ("queries", "candidates", "secondary") if key in evaluation},
                # the backbone's bottom through the cache its modules read (a module reads its own manifest's)
                **({"frozen_layers": plan["phase"]["frozen_layers"]} if plan["phase"].get("frozen_layers") else {}),
                **_smoke_rows(plan), **share_keys(plan, target)}
    if settings["precision"] not in CHOICES["precision"]:
        raise UserError(f"{plan['file']}: evaluation.precision must be one of {', '.join(CHOICES['precision'])}, "
                        f"got {settings['precision']!r}")
    if not isinstance(settings.get("secondary", True), bool):
        raise UserError(f"{plan['file']}: evaluation.secondary must be true or false, got {settings['secondary']!r}")
    try:
        get_task(target).sized(settings.get("queries"), settings.get("candidates")).check_langs(settings["langs"])
    except UserError as err:
        raise UserError(f"{plan['file']}: evaluation: {err}") from None
    baseline = graph.add(Phase(f"backbone/{target}", "evaluate", "evaluation", target, settings, target=target,
                               arm=BASELINE))
    _add_arm(graph, regime, target, BASELINE, seed, baseline, ())
    if regime not in _evaluated_regimes(plan):
        return
    joint_arms = {"+".join(members): TRANSFERS["multitask"].arm([name]) for name, members in multitask_sets(plan).items()}
    for task, source in intermediates.items():
        arm = task if task in plan["intermediates"] else joint_arms[task]
        key = graph.add(Phase(f"seed{seed}/{regime}/{target}/{_slug(arm)}", "evaluate", "evaluation", target,
                              settings, seed, regime, target, arm, model=source))
        _add_arm(graph, regime, target, arm, seed, key, (task,))


def _evaluated_regimes(plan) -> list[str]:
    return plan["evaluation"].get("regimes", plan["regimes"])


def _add_arm(graph, regime, target, name, seed, key, tasks) -> None:
    arm = next((a for a in graph.arms if (a.regime, a.target, a.name) == (regime, target, name)), None)
    if arm is None:
        arm = Arm(regime, target, name, {}, tasks)
        graph.arms.append(arm)
    arm.keys[seed] = key


def _train(plan, key, role, task, regime, seed, init_from=(), transfer="sequential", stacks_on=(),
           language=None, arm=None, lang_modules=(), keys=None) -> Phase:
    """One train phase: its settings validated as a RunConfig (``keys``: the arm's own, over the plan's), a merge
    checked as far as it can be before its parents exist."""
    base = _base(plan, regime)
    values = {**_settings(plan, role, task, regime), **(keys or {}), "task": task, "regime": base,
              "backbone": plan["backbone"],
              "seed": seed, "transfer": transfer, "language": language,
              **(share_keys(plan, task) if role == "target" else {})}
    where = f"{plan['file']}: phase {key}"
    config = from_dict(values, source=where)
    if transfer == "merge":
        try:
            merges.check(get_regime(base), config, len(init_from))
        except UserError as err:
            raise UserError(f"{where}: {err}") from None
    inputs = {*INPUT_PATHS, "output_dir"} - {"backbone"}  # filled in when the phase runs
    settings = {k: v for k, v in vars(config).items() if reads(base, k, transfer) and k not in inputs}
    if role == "target":
        get_task(task).check_langs(settings["eval_langs"])
    stacked = tuple(stacks_on) if get_regime(base).stacks_key else ()  # lora's language phases are lang_modules
    return Phase(key, "train", role, task, settings, seed, regime, task if role == "target" else None, arm,
                 tuple(init_from), stacked, tuple(lang_modules))


def _settings(plan, role, task, regime) -> dict:
    """Train keys of one phase: phase < role block < task_phase[task] < a variant's keys < regime_phase[regime]."""
    role_block = (_regime(plan, regime).language_phases(_block(plan, regime))[1] if role == "language" else
                  {"intermediate": plan["intermediate_phase"], "stage": plan["intermediate_phase"],
                   "target": plan["target_phase"]}[role])
    merged = {}
    for block in (plan["phase"], role_block, plan["task_phase"].get(task, {}), _variant_keys(plan, regime),
                  plan["regime_phase"].get(regime, {})):
        merged |= _with_recipe(plan, block)
    if plan.get("smoke"):
        merged |= SMOKE_PHASE | {"probe_steps": min(1, merged.get("probe_steps", 0))}
    # another regime's keys (a block or recipe shared by the plan's regimes) apply to that regime's phases
    return {name: value for name, value in merged.items() if name not in FIELDS or reads(_base(plan, regime), name)}


def _smoke_rows(plan) -> dict:
    """An evaluation phase's row cap in a smoke run (none otherwise, so a real plan's identities stay)."""
    return {"rows_per_split": SMOKE_PHASE["rows_per_split"]} if plan.get("smoke") else {}


def _with_recipe(plan, block: dict) -> dict:
    """A block may name a `train` recipe (``recipe: configs/x.yaml``); its own keys win over the recipe's."""
    if "recipe" not in block:
        return dict(block)
    recipe = _recipe(block["recipe"])
    return {**{k: v for k, v in recipe.items() if k not in ("task", "output_dir")},
            **{k: v for k, v in block.items() if k != "recipe"}}


@lru_cache(maxsize=None)
def _recipe(path: str) -> dict:
    """A recipe file, read once per process: expanding a plan builds every phase's settings from it."""
    return read_yaml(path)


def _check_contrasts(plan, graph) -> None:
    where = plan["file"]
    primary = [c for c in plan["contrasts"] if isinstance(c, dict) and c.get("primary")]
    for contrast in plan["contrasts"]:
        _check_keys(f"{where}: contrasts entry", contrast, BLOCK_KEYS["contrasts"])
        missing = [k for k in ("name", "run", "versus") if k not in contrast]
        target = contrast.get("target") or (plan["targets"][0] if len(plan["targets"]) == 1 else None)
        if missing or target is None:
            raise UserError(f"{where}: contrasts entry {contrast!r} needs name, run, versus"
                            + ("" if target else " and target (the plan has several targets)"))
        for side in ("run", "versus"):
            if graph.arm(contrast[side], target) is None:
                arms = ", ".join(a.label for a in graph.arms if a.target == target)
                raise UserError(f"{where}: contrast {contrast['name']!r}: {side} {contrast[side]!r} is not an arm "
                                f"of target {target} (arms: {arms})")
    names = [c["name"] for c in plan["contrasts"]]
    if len(set(names)) != len(names):
        raise UserError(f"{where}: contrasts: two contrasts are named alike ({', '.join(names)})")
    if plan["contrasts"] and len(primary) != 1:
        raise UserError(f"{where}: contrasts: exactly one must have primary: true, got {len(primary)}")


def contrasts(plan: dict) -> list[dict]:
    """The plan's contrasts with their target filled in, the primary one first."""
    filled = [{**c, "target": c.get("target") or plan["targets"][0], "primary": bool(c.get("primary"))}
              for c in plan["contrasts"]]
    return sorted(filled, key=lambda c: not c["primary"])


def _slug(arm: str) -> str:
    """An arm's folder name: stack(a) -> stack-a, fusion(a+b) -> fusion-a+b, source adapter -> source-adapter."""
    return arm.replace("(", "-").replace(")", "").replace(" ", "-")
