"""Study plans: the shipped plans expand as documented; a bad plan is refused in one line before anything trains."""

import json
import re
from pathlib import Path

import pytest
import yaml

from adapterxfer.cli import main
from adapterxfer.errors import UserError
from adapterxfer.study.plan import KEYS, contrasts, expand, expand_confirmation, read_plan, smoke_plan

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_demo_plan_is_the_research_question():
    plan = read_plan(str(CONFIGS / "demo.yaml"))
    graph = expand(plan)
    seeds = plan["seeds"]
    trained = [f"seed{s}/lora/{task}" for s in seeds for task in ("verses-xref-bi", "verses-xref-bi-multi")]
    assert sorted(key for key, p in graph.phases.items() if p.action == "train") == sorted(trained)
    evaluations = [p for p in graph.phases.values() if p.action == "evaluate"]
    assert sorted(p.model for p in evaluations if p.model) == sorted(trained)
    assert {p.task for p in evaluations} == {"verses-retrieval"} and "backbone/verses-retrieval" in graph.phases
    assert len({json.dumps(p.settings, sort_keys=True) for p in evaluations}) == 1  # every arm scored alike
    assert evaluations[0].settings["frozen_layers"] == plan["phase"]["frozen_layers"]  # the backbone's too
    steps = {(p.settings["max_steps"], p.settings["batch_size"], p.settings["precision"], p.settings["frozen_layers"])
             for p in graph.phases.values() if p.action == "train"}
    assert steps == {(plan["phase"]["max_steps"], 8, "fp32", plan["phase"]["frozen_layers"])}
    assert [c["name"] for c in contrasts(plan) if c["primary"]] == ["multilingual-intermediate"]
    assert graph.arm("lora/baseline", "verses-retrieval").keys == {s: "backbone/verses-retrieval" for s in seeds}


def with_regimes(tmp_path) -> dict:
    """The demo's plan with the regimes beside LoRA on the multilingual intermediate, one seed each of three."""
    plan = yaml.safe_load((CONFIGS / "demo.yaml").read_text()) | {
        "seeds": [1, 2, 3], "regimes": ["full", "lora", "bottleneck"], "regime_seeds": {"full": [1], "bottleneck": [1]},
        "intermediate_regimes": {"verses-xref-bi": ["lora"]}}
    (tmp_path / "regimes.yaml").write_text(yaml.safe_dump(plan))
    return read_plan(str(tmp_path / "regimes.yaml"))


def test_demo_confirms_its_primary_contrast_on_new_seeds_and_the_held_out_chapters():
    plan = read_plan(str(CONFIGS / "demo.yaml"))
    block, graph = plan["confirmation"], expand_confirmation(plan)
    assert not set(block["seeds"]) & set(plan["seeds"]) and (block["held_out"], block["by"]) == (0.5, "chapter")
    trained = sorted(f"confirm/seed{s}/lora/{task}" for s in block["seeds"]
                     for task in ("verses-xref-bi", "verses-xref-bi-multi"))
    assert sorted(key for key, p in graph.phases.items() if p.action == "train") == trained
    scored = [p for p in graph.phases.values() if p.action == "evaluate"]
    assert sorted(p.model for p in scored) == trained
    assert {(p.settings["test_share"], p.settings["held_out"], p.settings["held_out_by"]) for p in scored} == {
        ("confirm", 0.5, "chapter")}
    explored = [p for p in expand(plan).phases.values() if p.action == "evaluate"]
    assert {p.settings["test_share"] for p in explored} == {"explore"}


def test_regime_seeds_run_a_regime_on_a_subset_of_the_seeds_and_smoke_on_the_first(tmp_path):
    plan = with_regimes(tmp_path)
    graph = expand(plan)
    assert set(graph.arm("full/verses-xref-bi-multi", "verses-retrieval").keys) == {1}
    assert sorted(key for key, p in graph.phases.items() if p.action == "train" and p.regime != "lora") == [
        "seed1/bottleneck/verses-xref-bi-multi", "seed1/full/verses-xref-bi-multi"]
    smoke = smoke_plan(plan)
    assert smoke["regime_seeds"] == {} and smoke["seeds"] == plan["seeds"][:1]
    assert {p.regime for p in expand(smoke).phases.values() if p.action == "train"} == {"full", "lora", "bottleneck"}


def test_gpu_plan_has_every_regime_and_transfer():
    graph = expand(read_plan(str(CONFIGS / "demo_gpu.yaml")))
    arms = {arm.label for arm in graph.arms if arm.target == "verses-genre"}
    joint = "verses-xref-bi+verses-xref-bi-multi+verses-next"
    assert {"lora/stack(verses-next)", f"lora/merge({joint})", f"bottleneck/fusion({joint})",
            f"full/multitask({joint})", "madx/verses-xref-bi [source adapter]"} <= arms
    assert len(read_plan(str(CONFIGS / "demo_gpu.yaml"))["seeds"]) >= 5
    phase = graph.phases["seed3/madx/verses-genre/verses-xref-bi"]
    assert phase.stacks_on[0] == "seed3/madx/lang/en" and len(phase.stacks_on) == 22
    retrieval = graph.phases["seed1/lora/verses-retrieval/verses-next"]
    assert (retrieval.action, retrieval.model) == ("evaluate", "seed1/lora/verses-next")
    assert (retrieval.settings["queries"], retrieval.settings["candidates"], retrieval.settings["langs"]) == (
        "all", "all", [])  # all 2,921 test verses of every language
    assert graph.arm("full/baseline", "verses-retrieval").keys == {s: "backbone/verses-retrieval" for s in range(1, 6)}


def test_xstilts_plan_takes_its_settings_from_the_train_recipes():
    graph = expand(read_plan(str(CONFIGS / "xstilts.yaml")))
    xquad = graph.phases["seed2/lora/xquad/squad"].settings
    assert (xquad["max_length"], xquad["grad_accum"], xquad["lr"], xquad["backbone"]) == (512, 4, 3.0e-4,
                                                                                         "xlm-roberta-large")
    assert graph.phases["seed1/full/mnli"].settings["max_steps"] == 20000
    assert graph.phases["seed1/full/tatoeba/mnli"].settings["layer"] == 13
    assert len([p for p in graph.phases.values() if p.role == "target"]) == 8 * 3 * (13 * 3 + 1)


def test_xstilts_plan_expands_xcopa_stages_the_english_multitask_arm_and_mnli_with_mlm():
    graph = expand(read_plan(str(CONFIGS / "xstilts.yaml")))
    for arm in ("baseline", "mnli", "multitask-english-9"):
        stage = graph.phases[f"seed1/full/xcopa/{arm}.siqa"]
        assert (stage.role, stage.task) == ("stage", "siqa")
        assert graph.phases[f"seed1/full/xcopa/{arm}"].init_from == (stage.key,)
    assert graph.phases["seed1/full/xcopa/mnli.siqa"].init_from == ("seed1/full/mnli",)
    assert graph.phases["seed1/full/xcopa/baseline.siqa"].init_from == ()
    assert graph.phases["seed1/full/xnli/mnli"].init_from == ("seed1/full/mnli",)  # no stages: straight on
    english = "anli-plus+mnli+qqp+squad+squad2+hellaswag+ccg+cosmosqa+commonsenseqa"
    assert graph.arm("full/multitask(english-9)", "panx").keys[2] == "seed2/full/panx/multitask-english-9"
    assert graph.phases["seed2/full/panx/multitask-english-9"].init_from == (f"seed2/full/{english}",)
    assert graph.arm("lora/multitask(english-9)", "panx") is None  # multitask runs in full only
    assert graph.phases["seed3/lora/mnli+wiki-mlm"].task == "mnli+wiki-mlm"
    assert graph.arm("bottleneck/mnli+wiki-mlm", "xquad").intermediates == ("mnli+wiki-mlm",)
    assert graph.phases["seed1/full/tatoeba/multitask-english-9"].model == f"seed1/full/{english}"


def test_every_plan_key_has_help():
    assert all(len(entry) == 3 and entry[2] for entry in KEYS.values())


VALID = {"backbone": "me5-small", "seeds": [1], "targets": ["verses-genre"], "intermediates": ["verses-xref"],
         "regimes": ["lora"]}
BAD_PLANS = {  # changes to a valid plan -> the one line that refuses it
    "unknown key": ({"seed": 1}, "plan.yaml: unknown key 'seed'; did you mean 'seeds'? (allowed: description, backbone"),
    "missing key": ({"seeds": None}, "plan.yaml: key 'seeds' must be a non-empty list of integers, got None"),
    "unknown task": ({"intermediates": ["verses-nope"]}, "unknown task 'verses-nope'"),
    "target as intermediate": ({"intermediates": ["verses-genre"]},
                               "intermediates: verses-genre is a target task; intermediates lists intermediate tasks"),
    "typo in a phase block": ({"regime_phase": {"lora": {"max_step": 3}}},
                              "plan.yaml: phase seed1/lora/verses-xref: unknown key 'max_step'"),
    "transfer a regime lacks": ({"transfers": {"fusion": ["lora"]}},
                                "transfers.fusion: regime lora does not offer it (it offers sequential, stack, merge, "
                                "arithmetic, multitask)"),
    "combining one intermediate": ({"transfers": {"merge": ["lora"]}},
                                   "transfers.merge combines intermediates; the plan lists 1"),
    "arithmetic without language modules": ({"transfers": {"arithmetic": ["lora"]}},
                                            "transfers.arithmetic needs language modules, and regime lora trains "
                                            "none: give it its block lora: {lang_module_task, phase}"),
    "madx without its task": ({"regimes": ["madx"], "transfers": {"sequential": ["madx"]}},
                              "regime madx needs madx: {lang_adapter_task: ...}"),
    "contrast of an arm not run": ({"contrasts": [{"name": "x", "run": "lora/verses-next", "versus": "lora/baseline",
                                                   "primary": True}]},
                                   "contrast 'x': run 'lora/verses-next' is not an arm of target verses-genre "
                                   "(arms: lora/baseline, lora/verses-xref)"),
    "no primary contrast": ({"contrasts": [{"name": "x", "run": "lora/verses-xref", "versus": "lora/baseline"}]},
                            "contrasts: exactly one must have primary: true, got 0"),
    "bad cluster level": ({"clusters": {"verses-genre": "verse"}},
                          "clusters: verses-genre: verse must map a target of the plan (verses-genre) to one of "
                          "item, chapter, book"),
    "part of a joint intermediate": ({"intermediates": ["verses-xref+verses-nope"]}, "unknown task 'verses-nope'"),
    "joint intermediate in madx": ({"intermediates": ["verses-xref+verses-next"], "regimes": ["madx"],
                                    "madx": {"lang_adapter_task": "verses-text"}},
                                   "intermediates: verses-xref+verses-next trains tasks together, which regime madx "
                                   "does not offer"),
    "variant named like a regime": ({"variants": {"lora": {"regime": "peft"}}},
                                    "variants.lora: a variant is a new name (not one of the regimes full, lora, "
                                    "bottleneck, madx, ia3, peft) mapped to {regime: one of them, train keys}"),
    "variant of no regime": ({"variants": {"dora": {"regime": "dora"}}, "regimes": ["lora", "dora"]},
                             "variants.dora: a variant is a new name"),
    "variant key its regime lacks": ({"variants": {"dora": {"regime": "peft", "lora_r": 4}},
                                      "regimes": ["lora", "dora"]},
                                     "variants.dora: key 'lora_r' belongs to regime lora, not peft"),
    "variant field its method lacks": ({"variants": {"vera": {"regime": "peft", "peft_method": "vera",
                                                              "peft": {"use_dora": True}}},
                                        "regimes": ["lora", "vera"]},
                                       "phase seed1/vera/verses-xref: peft_method=vera has no field 'use_dora'"),
    "named merges without transfers.merge": ({"merges": {"ties": {"merge_density": 0.5}}},
                                             "merges names merge arms; add the regimes they run in to transfers.merge"),
    "named merge of no method": ({"intermediates": ["verses-xref", "verses-next"], "merges": {"tie": {}},
                                  "transfers": {"merge": ["lora"]}},
                                 "merges.tie: unknown merge 'tie'; did you mean 'ties'?"),
    "named merge without its density": ({"intermediates": ["verses-xref", "verses-next"], "merges": {"ties": {}},
                                         "transfers": {"merge": ["lora"]}},
                                        "phase seed1/lora/verses-genre/merge-ties-verses-xref+verses-next: "
                                        "merge=ties needs merge_density="),
    "named merge with a foreign key": ({"intermediates": ["verses-xref", "verses-next"],
                                        "merges": {"cat": {"lr": 0.1}}, "transfers": {"merge": ["lora"]}},
                                       "merges.cat: unknown key 'lr'"),
    "multitask set of one": ({"multitask": {"solo": ["verses-xref"]}, "transfers": {"multitask": ["lora"]}},
                             "multitask.solo must list two or more intermediates of the plan (verses-xref), got "
                             "['verses-xref']"),
    "precision outside its choices": ({"regime_phase": {"lora": {"precision": "fp8"}}},
                                      "phase seed1/lora/verses-xref: key 'precision' must be one of auto, bf16"),
    "evaluation precision outside its choices": ({"targets": ["verses-genre", "verses-retrieval"],
                                                  "evaluation": {"precision": "fp8"}},
                                                 "plan.yaml: evaluation.precision must be one of auto, bf16, fp16, "
                                                 "fp32, got 'fp8'"),
    "language of no target": ({"target_phase": {"eval_langs": ["xx"]}}, "unknown language or translation 'xx'"),
    "intermediate in a regime not run": ({"intermediate_regimes": {"verses-xref": ["full"]}},
                                         "plan.yaml: intermediate_regimes: verses-xref: ['full'] must map an "
                                         "intermediate of the plan (verses-xref) to a list of its regimes (lora)"),
    "combining without every intermediate": ({"intermediates": ["verses-xref", "verses-next"], "regimes": ["lora", "full"],
                                              "transfers": {"merge": ["lora"]},
                                              "intermediate_regimes": {"verses-next": ["full"]}},
                                             "transfers.merge combines every intermediate in regime lora; "
                                             "intermediate_regimes leaves out verses-next"),
    "regime seeds not among the seeds": ({"regime_seeds": {"lora": [7]}},
                                         "plan.yaml: regime_seeds: lora: [7] must map a regime of the plan (lora) to a "
                                         "non-empty list of its seeds ([1])"),
    "pool smaller than the queries": ({"targets": ["verses-retrieval"], "evaluation": {"queries": 200, "candidates": 100}},
                                      "plan.yaml: evaluation: candidates: 100 is below queries: 200"),
    "queries not a number": ({"targets": ["verses-retrieval"], "evaluation": {"queries": "many"}},
                             "plan.yaml: evaluation: queries: 'many' must be a positive number or all"),
    "secondary not a flag": ({"targets": ["verses-retrieval"], "evaluation": {"secondary": "no"}},
                             "plan.yaml: evaluation.secondary must be true or false, got 'no'"),
    "a field the peft method lacks": ({"regimes": ["peft"], "regime_phase": {"peft": {"peft_method": "vera",
                                                                                     "peft.rank": 4}}},
                                      "plan.yaml: phase seed1/peft/verses-xref: peft_method=vera has no field 'rank'"),
}


def test_a_plan_runs_any_peft_method_and_merge_arms_with_their_own_keys(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({**VALID, "intermediates": ["verses-xref", "verses-next"], "regimes": ["lora", "peft"],
                                    "transfers": {"sequential": ["lora", "peft"], "merge": ["lora"]},
                                    "regime_phase": {"lora": {"merge": "ties", "merge_density": 0.5},
                                                     "peft": {"peft_method": "vera", "peft": {"r": 4},
                                                              "peft.d_initial": 0.2}}}))
    graph = expand(read_plan(str(plan)))
    vera = graph.phases["seed1/peft/verses-genre/verses-xref"].settings
    assert (vera["peft_method"], vera["peft"]) == ("vera", {"r": 4, "d_initial": 0.2})
    merged = graph.phases["seed1/lora/verses-genre/merge-verses-xref+verses-next"].settings
    assert (merged["transfer"], merged["merge"], merged["merge_density"]) == ("merge", "ties", 0.5)
    assert "merge" not in graph.phases["seed1/lora/verses-genre/verses-xref"].settings  # not a merge: not its key


def test_arithmetic_arms_compose_each_plain_arm_with_the_language_modules_beside_madx(tmp_path):
    from adapterxfer.study.matching import trained

    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({**VALID, "regimes": ["lora", "madx"], "target_phase": {"eval_langs": ["fr"]},
                                    "transfers": {"sequential": ["lora", "madx"], "stack": ["lora"],
                                                  "arithmetic": ["lora", "madx"]},
                                    "lora": {"lang_module_task": "verses-text", "phase": {"lr": 1e-3}},
                                    "madx": {"lang_adapter_task": "verses-text"},
                                    "regime_phase": {"lora": {"arithmetic_lambda": 0.5}}}))
    graph = expand(read_plan(str(plan)))
    arms = sorted(arm.label for arm in graph.arms)
    assert arms == ["lora/arithmetic(baseline)", "lora/arithmetic(verses-xref)", "lora/baseline",
                    "lora/stack(verses-xref)", "lora/verses-xref", "madx/arithmetic(baseline)",
                    "madx/arithmetic(verses-xref)", "madx/baseline", "madx/verses-xref"]  # a stacked one is not composed
    for regime in ("lora", "madx"):
        langs = tuple(f"seed1/{regime}/lang/{lang}" for lang in ("en", "fr"))
        composed = graph.phases[f"seed1/{regime}/verses-genre/arithmetic-baseline"]
        assert (composed.settings["transfer"], composed.init_from, composed.lang_modules) == (
            "arithmetic", (f"seed1/{regime}/verses-genre/baseline",), langs)
        assert composed.stacks_on == () and set(composed.deps) == {*composed.init_from, *langs}
        assert graph.phases[langs[1]].settings["task"] == "verses-text" and graph.phases[langs[1]].action == "train"
        # nothing trains in the arithmetic phase: its lineage is the task module's, so the two arms match
        assert trained(graph, composed.key) == trained(graph, composed.init_from[0])
    assert graph.phases["seed1/lora/lang/fr"].settings["lr"] == 1e-3
    assert graph.phases["seed1/lora/verses-genre/arithmetic-baseline"].settings["arithmetic_lambda"] == 0.5
    assert graph.phases["seed1/lora/verses-genre/baseline"].stacks_on == ()  # lora stacks on no language phase
    assert graph.phases["seed1/madx/verses-genre/baseline"].stacks_on == tuple(
        f"seed1/madx/lang/{lang}" for lang in ("en", "fr"))
    assert "arithmetic_lambda" not in graph.phases["seed1/lora/verses-genre/baseline"].settings


@pytest.mark.parametrize("changes, message", BAD_PLANS.values(), ids=BAD_PLANS)
def test_bad_plan_is_one_line_and_nothing_is_written(tmp_path, capsys, changes, message):
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({**VALID, "output": str(tmp_path / "out"), **changes}))
    assert main(["study", "run", str(plan)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_regimes_plan_block_comes_from_its_hooks():
    from adapterxfer.regimes import get_regime
    from adapterxfer.study.plan import BLOCK_KEYS

    madx, lora = get_regime("madx"), get_regime("lora")
    assert BLOCK_KEYS["madx"] == set(madx.plan_keys) == {"lang_adapter_task", "ablation", "phase"}
    assert "peft" not in KEYS and KEYS["madx"][2].startswith("regime madx: lang_adapter_task (")
    assert lora.language_phases({"lang_module_task": "verses-text"}) == ("verses-text", {})
    assert madx.language_phases({"lang_adapter_task": "verses-text", "phase": {"lr": 1e-3}}) == \
        ("verses-text", {"lr": 1e-3})
    assert madx.ablations({"ablation": True}) == {"source adapter": {"lang_adapter_at_test": "source"}}
    assert madx.ablations({}) == lora.ablations({}) == {} and lora.language_phases({}) is None


def test_a_shared_recipe_gives_each_regime_its_own_keys_and_a_key_no_regime_of_the_plan_reads_is_refused(tmp_path):
    """configs/xstilts.yaml's intermediate recipe is full fine-tuning's (freeze_word_embeddings); its LoRA and
    bottleneck phases take the recipe's other keys only. A LoRA key in a plan without LoRA applies nowhere."""
    graph = expand(read_plan(str(CONFIGS / "xstilts.yaml")))
    assert graph.phases["seed1/full/mnli"].settings["freeze_word_embeddings"] is False
    lora = graph.phases["seed1/lora/mnli"].settings
    assert "freeze_word_embeddings" not in lora and lora["lr"] == 3.0e-4 and lora["lora_r"] == 8
    plan = tmp_path / "plan.yaml"
    base = {"backbone": "tiny-xlmr", "seeds": [1], "targets": ["verses-genre"], "intermediates": ["verses-xref"]}
    for changes, message in (({"regimes": ["full"], "phase": {"lora_r": 16}},
                              "phase: key 'lora_r' belongs to regime lora, which the plan does not run (regimes: full)"),
                             ({"regimes": ["full", "lora"], "regime_phase": {"full": {"lora_r": 16}}},
                              "regime_phase.full: key 'lora_r' belongs to regime lora, not full")):
        plan.write_text(yaml.safe_dump({**base, **changes}))
        assert main(["study", "status", str(plan)]) == 2
        with pytest.raises(UserError, match=re.escape(message)):
            read_plan(str(plan))


def test_two_phases_that_compute_the_same_thing_keep_an_identity_each(tmp_path):
    """siqa as an intermediate and as XCOPA's stage of the baseline: the same training (config.phase_identity),
    two phases of the study (their identities in the results database differ by key)."""
    from adapterxfer import config
    from adapterxfer.study.identity import phase_identity

    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"backbone": "tiny-xlmr", "seeds": [1], "targets": ["xcopa"],
                                    "intermediates": ["siqa"], "regimes": ["lora"]}))
    graph = expand(read_plan(str(plan)))
    intermediate, stage = graph.phases["seed1/lora/siqa"], graph.phases["seed1/lora/xcopa/baseline.siqa"]
    assert config.phase_identity(intermediate.settings, "sha256:b", []) == config.phase_identity(stage.settings,
                                                                                                 "sha256:b", [])
    assert phase_identity(intermediate, "sha256:b", []) != phase_identity(stage, "sha256:b", [])


def test_the_backbone_is_one_row_with_the_most_seeds_where_regimes_run_fewer(tmp_path):
    from adapterxfer.study.report import _distinct
    plan = with_regimes(tmp_path)
    rows = [{"target": arm.target, "arm": arm} for arm in expand(plan).arms]
    baselines = [row["arm"] for row in _distinct(rows) if row["arm"].name == "baseline"]
    assert [(arm.regime, sorted(arm.keys)) for arm in baselines] == [("lora", plan["seeds"])]
    assert len(_distinct(rows)) == len({(r["target"], frozenset(r["arm"].keys.values())) for r in rows})
