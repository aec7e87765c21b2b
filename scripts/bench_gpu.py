"""GPU readiness: train-step time, peak GPU memory and MFU of full, lora and bottleneck at XLM-R Large size.

    .venv/bin/python scripts/bench_gpu.py [--size large|tiny] [--batch 8] [--length 256] [--steps 20]
        [--warmup 5] [--precision auto|bf16|fp16|fp32] [--peak-tflops N]

The model is an xlm-roberta-large-sized encoder (24 x 1024, 16 heads, FFN 4096, 250k vocabulary) with
random weights: only shapes matter for speed, and the real weights cannot be downloaded everywhere.
Each regime is built by adapterxfer's own regime class (peft LoRA on query/value, r=8; adapters
seq_bn, reduction 16; full with the word embeddings frozen, adapterxfer's default) with a 3-class
classification head, and trained with adapterxfer's optimizer settings (AdamW, clipping at 1.0)
under the phase's autocast on synthetic batches (random token ids and labels, no padding), so no data
and no network are needed. A step is forward, backward, clipping and the optimizer; the median of
``--steps`` steps after ``--warmup`` is reported, synchronised with the GPU.

MFU is achieved model FLOP/s over the GPU's dense peak for the precision (``--peak-tflops``, else a
table of known GPUs). Model FLOPs per step are the standard transformer count (Kaplan et al. 2020;
Narayanan et al. 2021): per token 2 FLOPs per weight of the encoder layers and the head for the
forward, plus 2 L s d for attention scores and values; the backward of full fine-tuning doubles that
again (activation and weight gradients: 3x forward in all), while lora and bottleneck skip the weight
gradients of the frozen layers (about 2x forward). ``--size tiny`` is a 2 x 64 model for a CPU smoke run.
Lines: RESULT <regime>_step_s, <regime>_peak_gib, <regime>_mfu, and <regime>_over_full_step.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapterxfer.backbones import Backbone  # noqa: E402
from adapterxfer.config import from_dict  # noqa: E402
from adapterxfer.precision import autocast, grad_scaler, resolve  # noqa: E402
from adapterxfer.regimes import get_regime  # noqa: E402
from adapterxfer.tasks.spec import TaskSpec  # noqa: E402

SIZES = {"large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
         "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)}
# Dense (no sparsity) tensor-core peaks in TFLOP/s, from the vendors' data sheets.
PEAK_TFLOPS = {("H200", "bf16"): 989, ("H100", "bf16"): 989, ("A100", "bf16"): 312, ("L40S", "bf16"): 362,
               ("H200", "fp16"): 989, ("H100", "fp16"): 989, ("A100", "fp16"): 312, ("V100", "fp16"): 125,
               ("T4", "fp16"): 65}
REGIMES = ("full", "lora", "bottleneck")
TASK = TaskSpec(name="synthetic", kind="classification", role="target", description="random labels",
                languages=("en",), read=lambda split, lang, limit, seed: [], metric="accuracy",
                labels=("a", "b", "c"))


def backbone(folder: Path, size: str) -> Backbone:
    """A random-init encoder of the size, saved once; every regime builds on it as on a real backbone."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    config = XLMRobertaConfig(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1, **SIZES[size])
    torch.manual_seed(0)
    XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(folder, safe_serialization=True)
    return Backbone(name=f"xlmr-{size}-random", path=folder, weight_hash="random")


def build(regime: str, encoder: Backbone, device: torch.device):
    config = from_dict({"task": TASK.name, "regime": regime})
    return get_regime(regime).build(TASK, encoder, [], config).to(device), config


def model_flops(size: str, batch: int, length: int, regime: str) -> float:
    d, layers, ffn = SIZES[size]["hidden_size"], SIZES[size]["num_hidden_layers"], SIZES[size]["intermediate_size"]
    weights = layers * (4 * d * d + 2 * d * ffn) + d * d  # attention, FFN, the head's dense layer
    forward = batch * length * (2 * weights + 2 * 2 * layers * length * d)
    return forward * (3 if regime == "full" else 2)


def step_seconds(model, config, precision: str, device, batch: int, length: int, steps: int, warmup: int) -> list:
    generator = torch.Generator().manual_seed(0)
    inputs = {"input_ids": torch.randint(5, 250000, (batch, length), generator=generator).to(device),
              "attention_mask": torch.ones(batch, length, dtype=torch.long, device=device),
              "labels": torch.randint(0, len(TASK.labels), (batch,), generator=generator).to(device)}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    scaler = grad_scaler(precision, device)
    model.train()
    times = []
    for index in range(warmup + steps):
        _sync(device)
        started = time.perf_counter()
        with autocast(model, precision):
            loss = model(**inputs).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if index >= warmup:
            times.append(time.perf_counter() - started)
    return times


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_tflops(device, precision: str, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((value for (gpu, kind), value in PEAK_TFLOPS.items() if gpu in name and kind == precision), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="large")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense peak for MFU")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve(args.precision, device)
    peak = peak_tflops(device, precision, args.peak_tflops)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, {args.size} ({SIZES[args.size]}), batch {args.batch} x {args.length}, {precision}, "
          f"peak {peak or 'unknown'} TFLOP/s")
    step_s = {}
    with tempfile.TemporaryDirectory() as tmp:
        encoder = backbone(Path(tmp), args.size)
        for regime in REGIMES:
            model, config = build(regime, encoder, device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times = step_seconds(model, config, precision, device, args.batch, args.length, args.steps, args.warmup)
            step_s[regime] = statistics.median(times)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            print(f"{regime:10} {step_s[regime]:.4f} s/step [{min(times):.4f}-{max(times):.4f}]  "
                  f"trainable {trainable:,}")
            print(f"RESULT {regime}_step_s {step_s[regime]:.4f}")
            if device.type == "cuda":
                print(f"RESULT {regime}_peak_gib {torch.cuda.max_memory_allocated(device) / 2**30:.2f}")
            if peak:
                achieved = model_flops(args.size, args.batch, args.length, regime) / step_s[regime]
                print(f"RESULT {regime}_mfu {achieved / (peak * 1e12):.3f}")
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    for regime in ("lora", "bottleneck"):
        print(f"RESULT {regime}_over_full_step {step_s[regime] / step_s['full']:.3f}")


if __name__ == "__main__":
    main()
