"""Write the `text_classifier` example's held-out evaluation data
(``rnnexport/catalog/text_classifier_heldout.npz``): 400 sequences of its synthetic task drawn
with the held-out seed of `scripts/train_examples.py` (never trained on), with their labels.
Deterministic: the same bytes on every run. The spec names it in ``[evaluation]``.

    python scripts/write_heldout.py [--out PATH] [--count N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnexport.examples.text_classifier import synthetic_task
from rnnexport.golden import write_npz

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "rnnexport" / "catalog" / "text_classifier_heldout.npz"
HELD_OUT_SEED = 2  # scripts/train_examples.py's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--count", type=int, default=400)
    args = parser.parse_args()
    tokens, lengths, labels = synthetic_task(args.count, HELD_OUT_SEED)
    write_npz(args.out, {"tokens": tokens.numpy(), "lengths": lengths.numpy(), "labels": labels.numpy()})
    print(f"wrote {args.out}: {args.count} held-out sequences (seed {HELD_OUT_SEED}) with labels")


if __name__ == "__main__":
    main()
