"""fp32 vs dynamic int8 on the CPU for a saved model folder: size, latency, accuracy.

    python -m benchmarks.bench_quantize --model reports/<run-id>/model [--split validation]

Both rows are measured in one run on the same texts (`sftlib.deploy.quantization_table`);
compare the ratios, not the absolute times, across machines. The dataset and its subset
options come from the folder's run_config.json unless --dataset is given.
"""

from __future__ import annotations

import argparse

from sftlib import data, deploy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="saved model or export folder")
    parser.add_argument("--dataset", help="dataset spec (default: the model's run_config)")
    parser.add_argument("--split", default="validation", choices=("validation", "test"))
    parser.add_argument("--timing-examples", type=int, default=256)
    args = parser.parse_args(argv)

    cfg = deploy.trained_config(args.model, {"dataset": args.dataset} if args.dataset else {})
    split = data.load_from_config(cfg)[args.split]
    table = deploy.quantization_table(args.model, split["text"], split["label"],
                                      timing_examples=args.timing_examples)
    fp32, int8 = table.iloc[0], table.iloc[1]
    print(table.round(4).to_markdown() if _has_tabulate() else table.round(4).to_string())
    print(f"\nint8 / fp32: size {int8['size_mb'] / fp32['size_mb']:.2f}x, speed-up "
          f"{fp32['ms_per_example_batch_1'] / int8['ms_per_example_batch_1']:.2f}x at batch 1, "
          f"{fp32['ms_per_example_batch_32'] / int8['ms_per_example_batch_32']:.2f}x at batch 32,"
          f" accuracy {100 * (int8['accuracy'] - fp32['accuracy']):+.2f} points on "
          f"{len(split)} {args.split} examples")


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401  (pandas' to_markdown needs it; optional)
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
