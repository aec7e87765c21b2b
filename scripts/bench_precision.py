"""Is bf16 autocast worth it here? Times me5-small forward (no grad) and a training step
in fp32 and under bf16 autocast, in one run, and prints the ratios.

    .venv/bin/python scripts/bench_precision.py [--backbone me5-small] [--repeats 5]

Last line: RESULT bf16_over_fp32_inference <ratio of seconds; < 1 means bf16 pays>
"""

import argparse

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from adapterxfer.backbones import resolve
from timing import median_seconds

SENTENCE = "And the evening and the morning were the first day, and it was good in every way."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="me5-small")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    path = resolve(args.backbone).path
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=8)
    model.get_input_embeddings().requires_grad_(False)
    batch = tokenizer([SENTENCE] * args.batch, return_tensors="pt", padding=True)
    labels = torch.zeros(args.batch, dtype=torch.long)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def infer(bf16: bool):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(**batch)

    def step(bf16: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    seconds = {(name, bf16): median_seconds(lambda: fn(bf16), args.repeats)
               for name, fn in (("inference", infer), ("train_step", step)) for bf16 in (False, True)}
    for (name, bf16), value in seconds.items():
        print(f"{name:10} {'bf16' if bf16 else 'fp32'}: {value:.3f} s per batch of {args.batch}")
    for name in ("train_step", "inference"):
        print(f"RESULT bf16_over_fp32_{name} {seconds[(name, True)] / seconds[(name, False)]:.2f}")


if __name__ == "__main__":
    main()
