"""Train-step time and peak memory of the PEFT regimes relative to full fine-tuning, and the
overhead of adapterxfer's training loop over a bare peft / adapters loop on the same model.

    .venv/bin/python scripts/bench_regimes.py [--backbone xlmr-base-random|me5-small] [--steps 8]

Each measurement runs in its own process (peak RSS is per process), all in this one run.
``xlmr-base-random`` is an xlm-roberta-base-sized model (12 x 768, 250k vocabulary) with random
weights, built locally because the real one cannot be downloaded here.
Last line: RESULT overhead_adapterxfer_over_bare <ratio>
"""

import argparse
import multiprocessing
import resource
import tempfile
import time

import torch


def base_sized_backbone(folder: str) -> str:
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

    from adapterxfer.backbones import resolve

    me5 = resolve("me5-small").path  # XLM-R's own 250k vocabulary
    config = XLMRobertaConfig(vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                              intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1)
    torch.manual_seed(0)
    XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(folder)
    AutoTokenizer.from_pretrained(me5).save_pretrained(folder)
    return folder


def measure(regime: str, backbone_name: str, loop: str, steps: int, batch: int, length: int) -> dict:
    """Seconds per step and peak RSS of ``steps`` training steps (after one warm-up step)."""
    import datasets

    from adapterxfer.backbones import resolve
    from adapterxfer.config import from_dict
    from adapterxfer.kinds import KINDS
    from adapterxfer.regimes import get_regime
    from adapterxfer.tasks import get_task
    from adapterxfer.train import Source, fit

    task, backbone = get_task("verses-genre"), resolve(backbone_name)
    config = from_dict({"task": task.name, "regime": regime, "max_steps": steps + 1, "eval_every": steps + 1,
                        "batch_size": batch, "precision": "fp32", "lr": 1e-5})
    model = get_regime(regime).build(task, backbone, [], config)
    generator = torch.Generator().manual_seed(0)
    rows = {"input_ids": torch.randint(5, 1000, ((steps + 1) * batch, length), generator=generator).tolist(),
            "labels": torch.randint(0, len(task.labels), ((steps + 1) * batch,), generator=generator).tolist()}
    features = datasets.Dataset.from_dict(rows)
    collate = KINDS[task.kind].collator(_tokenizer(backbone.path))
    started = time.perf_counter()
    if loop == "adapterxfer":
        fit(model, [Source(features, [length] * len(features), collate)], lambda trained: 0.0, config)
    else:
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        for start in range(0, len(features), batch):
            model(**collate([features[i] for i in range(start, start + batch)])).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    seconds = time.perf_counter() - started
    return {"step_s": seconds / (steps + 1), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def _tokenizer(path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path)


def in_process(*args) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="xlmr-base-random")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        backbone = base_sized_backbone(tmp) if args.backbone == "xlmr-base-random" else args.backbone
        runs = {(regime, loop): in_process(regime, backbone, loop, args.steps, args.batch, args.length)
                for regime in ("full", "lora", "bottleneck") for loop in ("adapterxfer", "bare")}
    for (regime, loop), run in runs.items():
        print(f"{regime:10} {loop:11} {run['step_s']:.3f} s/step  peak RSS {run['peak_rss_mb']:.0f} MB  "
              f"trainable {run['trainable']:,}")
    full = runs[("full", "adapterxfer")]
    for regime in ("lora", "bottleneck"):
        run = runs[(regime, "adapterxfer")]
        print(f"RESULT {regime}_over_full_step {run['step_s'] / full['step_s']:.3f}")
        print(f"RESULT {regime}_over_full_peak_rss {run['peak_rss_mb'] / full['peak_rss_mb']:.3f}")
    overhead = max(runs[(r, "adapterxfer")]["step_s"] / runs[(r, "bare")]["step_s"] for r in ("full", "lora", "bottleneck"))
    print(f"RESULT overhead_adapterxfer_over_bare {overhead:.3f}")


if __name__ == "__main__":
    main()
