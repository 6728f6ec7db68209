"""Train the `text_classifier` example on its synthetic task and write its weights
(``rnnexport/catalog/text_classifier.safetensors``), deterministically (seeded, one thread).

The task (`rnnexport.examples.text_classifier.synthetic_task`): which of two keywords comes
first in a padded token sequence. Prints the held-out accuracy.

    python scripts/train_examples.py [--out PATH] [--epochs N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from rnnexport.examples.text_classifier import TextClassifier, synthetic_task

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "rnnexport" / "catalog" / "text_classifier.safetensors"
TRAIN_SEED, HELD_OUT_SEED = 1, 2


def accuracy(model: TextClassifier, tokens, lengths, labels) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(tokens, lengths).argmax(1) == labels).float().mean())


def train(epochs: int) -> tuple[TextClassifier, float]:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = TextClassifier()
    tokens, lengths, labels = synthetic_task(4000, TRAIN_SEED)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(labels))
        for start in range(0, len(labels), 64):
            batch = order[start:start + 64]
            loss = torch.nn.functional.cross_entropy(model(tokens[batch], lengths[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    held_out = synthetic_task(1000, HELD_OUT_SEED)
    return model.eval(), accuracy(model, *held_out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    start = time.perf_counter()
    model, held_out = train(args.epochs)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(args.out))
    print(f"text_classifier: held-out accuracy {held_out:.3f} on 1000 sequences (chance 0.200), "
          f"{args.epochs} epochs in {time.perf_counter() - start:.1f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
