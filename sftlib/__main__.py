"""The `sftlib` command line (also `python -m sftlib`).

    sftlib run [--config FILE] [--set key=value ...] [--notebooks 01 03] [--reports-dir DIR]
    sftlib runs [--reports-dir DIR] [--json]
    sftlib sweep [--config FILE] [--set k=v ...] --grid key=v1,v2 [--seeds K] [--samples N]
                 [--notebooks 03] [--sweep-dir DIR] [--devices auto|cpu|0,1] [--jobs N]
    sftlib sweep --search optuna --trials N --range key=low:high[:log] [--storage URL]
    sftlib compare RUN_OR_SWEEP... [--output DIR] [--metric accuracy] [--alpha 0.05]
    sftlib train [--config FILE] [--set key=value ...] [--output-dir DIR] [--resume]
    sftlib assets list [--json] | sftlib assets fetch NAME
    sftlib config [--config FILE] [--set key=value ...]
    sftlib data inspect [--dataset SPEC --text-column C --label-column C] [--json] [--strict]
    sftlib tokens inspect [--dataset SPEC --model SPEC --max-length N|auto --batch-size B] [--json]
    sftlib predict --model DIR [--backend torch|onnx] [--int8] TEXT... | --file FILE
    sftlib export --model RUN/model --output RUN/export [--replace] [--onnx]
    sftlib export --model RUN/export --onnx
    sftlib serve --model DIR [--backend torch|onnx] [--int8] [--host 127.0.0.1] [--port 8000]
    sftlib analyze --model DIR [--dataset SPEC] [--split validation] [--json] [--output-dir DIR]

Every command builds its RunConfig first, so a bad key or value fails before any work.
Exit codes: 0 success, 1 a run or command failed, 2 bad arguments or config.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from sftlib.assets import AssetError
from sftlib.config import ConfigError, load_config, parse_overrides
from sftlib.tasks import get_task


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of RunConfig keys")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override one RunConfig key (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sftlib", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"sftlib {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the notebooks headlessly into reports/<run-id>/",
                         description="Run the task's notebooks headlessly with papermill into "
                         "a new reports/<run-id>/ folder.", epilog=_keys_epilog(),
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    _config_args(run)
    run.add_argument("--notebooks", nargs="+", help="subset, by number or name (default: all)")
    _reports_dir_arg(run)

    runs = sub.add_parser("runs", help="the run folders and how each ended")
    _reports_dir_arg(runs)
    runs.add_argument("--json", action="store_true")

    sweep = sub.add_parser("sweep", help="many runs: a grid, random points of it, seeds, "
                           "or an Optuna search; resumable",
                           description="Run every point of a grid (x seeds) as an ordinary "
                           "run into one sweep folder; run the same command again to finish "
                           "a killed or partly failed sweep.", epilog=_keys_epilog(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    _config_args(sweep)
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                       help="values of one RunConfig key (repeatable: the product is swept)")
    sweep.add_argument("--seeds", type=int, default=1, help="seeds per point: the config's "
                       "seed, seed+1, ... (default 1)")
    sweep.add_argument("--samples", type=int, help="run N distinct random points of the grid")
    sweep.add_argument("--sample-seed", type=int, default=0, help="seed of --samples and of "
                       "the Optuna sampler (default 0)")
    sweep.add_argument("--notebooks", nargs="+", help="per point, e.g. 03 to train only "
                       "(default: all)")
    sweep.add_argument("--sweep-dir", help="the sweep folder (default: reports/sweep-<hash of "
                       "these arguments>, so the same command finds it again)")
    sweep.add_argument("--devices", default="auto", help="auto (one run per GPU when there "
                       "are several, else one at a time), cpu, or GPU numbers like 0,1")
    sweep.add_argument("--jobs", type=int, default=1, help="runs at once on the CPU, each "
                       "with its share of the threads (default 1)")
    sweep.add_argument("--no-compare", action="store_true",
                       help="skip the comparison of the runs at the end")
    sweep.add_argument("--search", choices=("optuna",), help="hyper-parameter search instead "
                       "of the grid's product")
    sweep.add_argument("--trials", type=int, default=10, help="complete trials the study "
                       "should hold (all workers together; default 10)")
    sweep.add_argument("--range", dest="ranges", action="append", default=[],
                       metavar="KEY=LOW:HIGH[:log]", help="a numeric range for --search")
    sweep.add_argument("--storage", help="Optuna RDB URL shared by all workers (default "
                       "sqlite:///<sweep folder>/optuna.db)")
    sweep.add_argument("--study", help="the study's name (default: the sweep folder's)")
    _reports_dir_arg(sweep)

    compare = sub.add_parser("compare", help="compare runs and sweeps: curves, mean ± std, "
                             "paired significance (runs notebook 06)")
    compare.add_argument("runs", nargs="+", metavar="RUN_OR_SWEEP",
                         help="run folders, sweep folders, folders of runs, or 'latest'")
    compare.add_argument("--output", help="comparison folder (default <sweep>/comparison, "
                         "else reports/comparison; never overwritten)")
    compare.add_argument("--metric", default="accuracy", choices=("accuracy", "f1", "loss"),
                         help="what ranks the configs, on validation (default accuracy)")
    compare.add_argument("--alpha", type=float, default=0.05, help="test level (default 0.05)")
    compare.add_argument("--bootstrap-resamples", type=int, default=2000)

    train = sub.add_parser("train", help="fine-tune without notebooks (torchrun / accelerate)")
    _config_args(train)
    train.add_argument("--output-dir", help="run folder (default: the config's output_dir)")
    train.add_argument("--resume", action="store_true",
                       help="continue from the last checkpoint in the run folder")

    assets_sub = _command_group(sub, "assets", "offline models and datasets")
    listing = assets_sub.add_parser("list", help="each asset's size, license, cache state "
                                    "(files changed since they were hashed count as not cached)")
    listing.add_argument("--json", action="store_true")
    fetch = assets_sub.add_parser("fetch", help="download, verify and cache an asset")
    fetch.add_argument("name")
    verify = assets_sub.add_parser("verify", help="re-hash every cached file against its "
                                   "manifest; exit 1 if any is damaged")
    verify.add_argument("names", nargs="*", metavar="NAME", help="assets to check (default: all)")

    config = sub.add_parser("config", help="print the resolved RunConfig as JSON")
    _config_args(config)

    predict = sub.add_parser("predict", help="classify texts with a saved model folder")
    predict.add_argument("--model", required=True,
                         help="a model folder a run wrote: reports/<run-id>/export (or model/)")
    predict.add_argument("--file", help="a UTF-8 text file, one text per line (lines end at "
                         "\\n only, CRLF works); empty and whitespace-only lines are skipped "
                         "and counted on stderr")
    _backend_args(predict)
    predict.add_argument("texts", nargs="*")

    export = sub.add_parser("export", help="a self-describing folder to ship (weights, "
                            "tokenizer, labels, model card), optionally with ONNX graphs")
    export.add_argument("--model", required=True, help="a run's model/ folder, or with --onnx "
                        "alone an earlier export folder to add the ONNX graphs to")
    export.add_argument("--output", help="the export folder to write (reports/<run-id>/export)")
    export.add_argument("--replace", action="store_true", help="replace an earlier export there")
    export.add_argument("--onnx", action="store_true", help="also write model.onnx and "
                        "model.int8.onnx, checked against PyTorch on validation rows")
    export.add_argument("--check-rows", type=int, default=256, help="validation rows of the "
                        "model's dataset the ONNX graph is checked on (default 256)")

    serve = sub.add_parser("serve", help="an HTTP server: POST /predict, GET /health")
    serve.add_argument("--model", required=True, help="an export folder (or model/)")
    _backend_args(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default "
                       "127.0.0.1: no authentication, keep it local or behind a proxy)")
    serve.add_argument("--port", type=int, default=8000)
    # defaults: sftlib.serve.ServeLimits (not imported here: it loads FastAPI and torch)
    serve.add_argument("--max-texts", type=int, help="texts per request (default 64)")
    serve.add_argument("--max-text-chars", type=int, help="characters per text (default 10000)")
    serve.add_argument("--max-body-bytes", type=int, help="request body (default 1000000)")
    serve.add_argument("--max-concurrency", type=int, default=128,
                       help="open connections before 503 (uvicorn's limit_concurrency)")

    # Inspection: flags override the config's keys; the rest comes from --config / defaults.
    data_sub = _command_group(sub, "data", "what is in the data and what is wrong with it")
    data_inspect = data_sub.add_parser("inspect", help="notebook 01's statistics (JSON keys: "
                                       "docs/inspection.md)")
    _dataset_args(data_inspect)
    data_inspect.add_argument("--min-label-share", type=float, default=None,
                              help="warn when the smallest label is under this share of train "
                                   "(default 0.10)")
    data_inspect.add_argument("--strict", action="store_true",
                              help="exit 1 on leakage or conflicting labels (strict_data)")

    tokens_sub = _command_group(sub, "tokens", "what the tokenizer does to the data")
    tokens_inspect = tokens_sub.add_parser("inspect", help="notebook 02's statistics (JSON "
                                           "keys: docs/inspection.md)")
    _dataset_args(tokens_inspect)
    tokens_inspect.add_argument("--model", help="asset name, hub id or local folder")
    tokens_inspect.add_argument("--max-length", type=_int_or_auto, help="an integer or 'auto'")
    tokens_inspect.add_argument("--batch-size", type=int, help="batch size for padding waste")
    analyze = sub.add_parser("analyze", help="error analysis of a saved model on a data split")
    analyze.add_argument("--model", required=True,
                         help="a model folder a run wrote: reports/<run-id>/model (or export/)")
    analyze.add_argument("--dataset", help="dataset spec (default: the model's run_config)")
    analyze.add_argument("--split", default="validation", choices=("validation", "test"))
    analyze.add_argument("--set", dest="overrides", action="append", default=[],
                         metavar="KEY=VALUE", help="override a RunConfig key of the model's run "
                         "(text_column, label_column, eval_subset ...)")
    analyze.add_argument("--batch-size", type=int, default=128)
    analyze.add_argument("--no-baselines", action="store_true",
                         help="skip the pre-fine-tuning and majority-class comparison")
    analyze.add_argument("--output-dir", help="also write analysis_<split>.json and "
                         "predictions_<split>.csv (every example with its loss) there")
    analyze.add_argument("--json", action="store_true", help="print everything as JSON")
    return parser


def _backend_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                        help="torch: the safetensors weights with PyTorch; onnx: model.onnx "
                        "with ONNX Runtime on the CPU (`sftlib export --onnx` writes it)")
    parser.add_argument("--int8", action="store_true", help="dynamic int8 (CPU): torch.ao on "
                        "the Linear layers, or model.int8.onnx with --backend onnx")


def _command_group(sub, name: str, help_text: str):
    """`sftlib NAME SUBCOMMAND`: the subparsers of a command group (dest NAME_command)."""
    return sub.add_parser(name, help=help_text).add_subparsers(dest=f"{name}_command",
                                                               required=True)


def _reports_dir_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reports-dir", default="reports", help="parent of the run folders")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("sftlib")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _keys_epilog() -> str:
    """The RunConfig keys, wrapped, for `sftlib run --help`."""
    import textwrap

    from sftlib.config import RunConfig

    keys = textwrap.fill(", ".join(RunConfig.field_names()), width=88,
                         initial_indent="  ", subsequent_indent="  ")
    return ("RunConfig keys for --set KEY=VALUE and --config files (each default and its "
            "reason: sftlib/config.py;\n`sftlib config [--config F] [--set K=V]` prints the "
            f"resolved config):\n{keys}")


def _int_or_auto(value: str) -> int | str:
    return value if value == "auto" else int(value)


def _dataset_args(parser: argparse.ArgumentParser) -> None:
    _config_args(parser)
    parser.add_argument("--dataset", help="asset name, local file or folder, or hub id")
    parser.add_argument("--dataset-config", help="hub dataset config name")
    parser.add_argument("--text-column")
    parser.add_argument("--label-column")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _inspect_config(args: argparse.Namespace, keys: tuple[str, ...]):
    """The RunConfig from --config / --set, with the command's own flags on top."""
    cfg = load_config(args.config, args.overrides)
    flags = {key: getattr(args, key) for key in keys if getattr(args, key, None) is not None}
    if getattr(args, "strict", False):
        flags["strict_data"] = True
    return cfg.replace(**flags) if flags else cfg


def cmd_run(args: argparse.Namespace) -> int:
    from sftlib.pipeline import PipelineError, RunInterrupted, run_pipeline

    cfg = load_config(args.config, args.overrides)
    try:
        run_dir = run_pipeline(cfg, args.notebooks, args.reports_dir)
    except PipelineError as error:
        print(f"[run] FAILED: {error}", file=sys.stderr)
        return 1
    except RunInterrupted as error:
        _quiet_after_interrupt()
        print(f"[run] {error}", file=sys.stderr)
        return 130
    metrics = json.loads((run_dir / "metrics.json").read_text()) \
        if (run_dir / "metrics.json").is_file() else {}
    print(f"[run] finished: {run_dir}")
    task = get_task(cfg.task)
    for split in ("validation", "test"):
        if split in metrics:
            print(f"[run] {task.headline(split, metrics[split])}")
    print(f"[run] open {run_dir / 'index.html'} in a browser, or the notebooks in JupyterLab")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from sftlib import search, sweep
    from sftlib.report import resolve_path

    base = load_config(args.config, args.overrides)
    grid = sweep.parse_grid(args.grid)
    if args.search:
        ranges = search.parse_ranges(args.ranges)
        search.check_space(base, ranges, grid, args.seeds)
        points: list = []
        checked = sweep.build_points(base, grid)  # every categorical value's inputs
    elif args.ranges:
        raise ConfigError("--range is for --search optuna; a grid takes --grid key=v1,v2")
    else:
        points = checked = sweep.build_points(base, grid, args.seeds, args.samples,
                                              args.sample_seed)
    notebooks = select_notebook_names(base.task, args.notebooks)
    spec = sweep.spec_of(base, grid, args.seeds, args.samples, args.sample_seed, notebooks)
    if args.search:
        spec.update(search="optuna", ranges=search.parse_ranges(args.ranges))
    sweep_dir = (resolve_path(args.sweep_dir) if args.sweep_dir
                 else sweep.default_sweep_dir(spec, args.reports_dir))
    devices = sweep.cuda_devices(args.devices, args.jobs)
    sweep.preflight_inputs(checked, print)
    job = sweep.Sweep(sweep_dir, spec, points, notebooks)
    try:
        if args.search:
            result = search.run_search(base, job, ranges, grid, args.trials, args.storage,
                                       args.study or sweep_dir.name, args.seeds,
                                       args.sample_seed)
            print(f"[search] {result['complete']} complete trials, "
                  f"{result['running_elsewhere']} running on other workers; best: "
                  f"{result['best']}")
            # short of the target with nothing left in flight: trials failed (see the logs)
            failed = result["complete"] + result["running_elsewhere"] < args.trials
            launched = True
        else:
            counts = job.run(devices)
            print(f"[sweep] {counts['ok']} ok, {counts['failed']} failed, "
                  f"{counts['interrupted']} interrupted: {job.index_path}")
            failed, launched = counts["ok"] < len(points), job.launched > 0
    except sweep.SweepError as error:
        print(f"sftlib: {error}", file=sys.stderr)
        return 1
    if not args.no_compare and get_task(base.task).comparison_notebook:
        _compare_after_sweep(sweep_dir, base.metric_for_best, launched)
    return 1 if failed else 0


def select_notebook_names(task: str, names: list[str] | None) -> list[str] | None:
    from sftlib.pipeline import select_notebooks

    return select_notebooks(task, names) if names else None


def _compare_after_sweep(sweep_dir: Path, metric: str, launched: bool) -> None:
    """The sweep's comparison; a sweep that ran nothing new shows the one it has. Whatever
    goes wrong here is one line: the runs are done either way."""
    from sftlib import compare

    earlier = sweep_dir / "comparison"
    if not launched and (earlier / "comparison.json").is_file():
        _print_comparison(earlier)
        return
    try:
        cfg = compare.CompareConfig(runs=[str(sweep_dir)], metric=metric,
                                    output_dir=str(compare.default_output_dir([str(sweep_dir)])))
        output = compare.run_comparison(cfg)
    except compare.CompareError as error:
        print(f"[sweep] no comparison: {error}")
        return
    except Exception as error:  # noqa: BLE001  (a failed notebook: its report says where)
        print(f"[sweep] the comparison failed: {type(error).__name__}: "
              f"{str(error).splitlines()[0] if str(error) else ''}")
        return
    _print_comparison(output)


def _number(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "n/a (no finite value)"
    return f"{value:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def _print_comparison(output: Path) -> None:
    result = json.loads((output / "comparison.json").read_text())
    print(f"[compare] ranking by validation {result['metric']}:")
    for number, label in enumerate(result["ranking"], start=1):
        row = result["summary"][label]
        print(f"  {number}. {label}: " + _number(row[f"validation/{result['metric']}/mean"],
                                                 row[f"validation/{result['metric']}/std"]))
    for line in result["verdicts"]:
        print(f"[compare] {line}")
    for page in sorted((output / "html").glob("*.html")):
        print(f"[compare] open {page}")


def cmd_compare(args: argparse.Namespace) -> int:
    from sftlib import compare
    from sftlib.pipeline import PipelineError

    cfg = compare.CompareConfig(runs=args.runs, metric=args.metric, alpha=args.alpha,
                                bootstrap_resamples=args.bootstrap_resamples,
                                output_dir=args.output or
                                str(compare.default_output_dir(args.runs)))
    try:
        output = compare.run_comparison(cfg)
    except compare.CompareError as error:
        print(f"sftlib: {error}", file=sys.stderr)
        return 2
    except PipelineError as error:
        print(f"sftlib: the comparison failed: {error}", file=sys.stderr)
        return 1
    _print_comparison(output)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from sftlib.pipeline import list_runs

    rows = list_runs(args.reports_dir)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        scores = ", ".join(f"{k} {v:.4f}" for k, v in row.get("validation", {}).items()
                           if k in ("accuracy", "f1", "loss", "perplexity"))
        print(f"{row['run']:<28} {row['status']:<12} {row.get('task') or '':<15} "
              f"{row.get('model') or ''}  {scores}")
    if not rows:
        print(f"no runs in {args.reports_dir}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from sftlib import distill, train
    from sftlib.report import Report

    cfg = load_config(args.config, args.overrides)
    if args.output_dir:
        cfg = cfg.replace(output_dir=args.output_dir)
    report = Report(cfg.output_dir)
    checkpoint = train.resume_checkpoint(report.dir / "checkpoints", args.resume)
    train.check_resume_config(checkpoint, cfg)
    try:
        # checkpoints and the model name their own folder; the log, figure and metrics.json
        # are in the run folder
        with train.naming_a_full_disk(report.dir):
            run = train.prepare_training(cfg, report.dir, notebook=False, resume=args.resume)
            output = run.trainer.train(resume_from_checkpoint=checkpoint)
            scores = train.evaluate_splits(run, predictions_dir=report.dir / "predictions")
            train.save_final(run.trainer, cfg, report.model_dir)
            if run.trainer.is_world_process_zero():
                report.metrics("training", train.training_summary(run, output))
                for split, values in scores.items():
                    report.metrics(split, values)
                distill.record_teacher_scores(cfg, run.dataset, report)  # with a teacher only
    except train.DiskFullError as error:
        print(f"sftlib: {error}", file=sys.stderr)
        return 1
    if run.trainer.is_world_process_zero():
        print(json.dumps({"output_dir": str(report.dir), **scores}, indent=2))
    return 0


def cmd_assets(args: argparse.Namespace) -> int:
    from sftlib import assets

    if args.assets_command == "fetch":
        path = assets.fetch(args.name, show_download=True)
        print(path)
        return 0
    if args.assets_command == "verify":
        damaged = []
        for name in args.names or list(assets.ASSETS):
            problems = assets.verify(name)  # an unknown name: AssetError, exit 2
            if problems in ([], ["not cached"]):
                print(f"{name:<22} {problems[0] if problems else 'ok'}")
            else:
                damaged.append(name)
                print(f"{name:<22} damaged: {'; '.join(problems)}")
        if damaged:
            print(f"fetch again: sftlib assets fetch NAME ({', '.join(damaged)})")
        return 1 if damaged else 0
    rows = assets.describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"cache: {assets.cache_dir()} (set SFTLIB_CACHE to move it)")
    width = max(len(row["name"]) for row in rows)
    print(f"{'name':<{width}}  {'kind':<7}  {'task':<14}  {'size':>8}  {'cached':<6}  license")
    for row in rows:
        cached = "yes" if row["cached"] else "no"
        print(f"{row['name']:<{width}}  {row['kind']:<7}  {row['task']:<14}  "
              f"{row['size_mb']:>6.1f}MB  {cached:<6}  {row['license']}")
        if row["status"] not in ("ok", "not cached"):
            print(f"{'':<{width}}  cache: {row['status']}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(load_config(args.config, args.overrides).to_dict(), indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    texts = list(args.texts)
    if args.file:
        lines, skipped = read_text_lines(args.file)
        texts += lines
        if skipped:
            print(f"sftlib: predict: skipped {skipped} empty line(s) of {args.file}",
                  file=sys.stderr)
        if not lines:
            raise ValueError(f"--file {args.file}: no text in it (empty lines are skipped)")
    if not texts:
        raise ConfigError("predict: give texts as arguments or --file FILE")
    from sftlib.deploy import Predictor  # after the texts: a bad --file fails before torch loads

    predictor = Predictor(args.model, batch_size=args.batch_size, quantize=args.int8,
                          backend=args.backend)
    for row in predictor.predict(texts):
        print(json.dumps(row))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Copy a model folder to --output (with its model card), and/or add the ONNX graphs,
    checked on the first --check-rows validation rows of the model's own dataset."""
    from sftlib import data, deploy

    source = deploy.check_model_dir(args.model)
    if args.output:
        folder = deploy.export(source, args.output, replace=args.replace)
        print(f"[export] {folder}")
    elif args.onnx and (source / "labels.json").is_file():
        folder = source
    else:
        raise ConfigError("export: give --output DEST, or --onnx alone with an export folder "
                          "(one holding labels.json) as --model")
    if args.onnx:
        texts = data.load_from_config(deploy.trained_config(folder))["validation"]["text"]
        result = deploy.export_onnx(folder, texts[:args.check_rows])
        print(f"[export] {folder / 'model.onnx'} ({result['exporter']}, opset "
              f"{result['opset']}): max |logit difference| vs PyTorch "
              f"{result['max_abs_logit_difference_fp32']:.2e} on {result['rows_compared']} "
              f"validation rows (tolerance {result['tolerance']:g})")
        print(f"[export] {folder / 'model.int8.onnx'}: agrees with fp32 on "
              f"{result['int8_agreement_with_fp32']:.1%} of those rows")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from sftlib.deploy import Predictor
    from sftlib.serve import ServeLimits, serve

    given = {key: getattr(args, key) for key in ("max_body_bytes", "max_texts", "max_text_chars")
             if getattr(args, key) is not None}
    limits = ServeLimits(**given)
    predictor = Predictor(args.model, batch_size=args.batch_size, quantize=args.int8,
                          backend=args.backend)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"sftlib: serve: binding {args.host}: anyone who reaches it can use the model "
              "(no authentication)", file=sys.stderr)
    serve(predictor, args.host, args.port, limits, args.max_concurrency)
    return 0


def read_text_lines(path: str | Path) -> tuple[list[str], int]:
    """The texts of a UTF-8 file, one per line, and how many empty lines were left out.

    Empty means empty or whitespace only (`not line.strip()`); every other line is one text,
    as it is (spaces kept).

    Lines end at "\\n" only (a trailing "\\r" of CRLF files is dropped): `str.splitlines` would
    also split inside a text at U+2028, U+0085, \\x0b, \\x0c, \\x1c... and give more answers than
    lines. A missing, unreadable or non-UTF-8 file is one ValueError naming it.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"--file {path}: cannot read it ({error.strerror or error})") from None
    try:
        content = data.decode("utf-8-sig")  # -sig: a BOM from Windows editors is not text
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(f"--file {path}: not UTF-8 text (byte 0x{data[error.start]:02x} on "
                         f"line {line}); save it as UTF-8") from None
    lines = content.split("\n")
    if lines[-1] == "":  # the final line's "\n" ends it; it does not start another
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    texts = [line for line in lines if line.strip()]
    return texts, len(lines) - len(texts)


DATASET_KEYS = ("dataset", "dataset_config", "text_column", "label_column")


def _print_report(report: dict, as_json: bool, lines: list[str]) -> None:
    """One JSON object (the inspect functions return JSON-native values), or a few lines."""
    print(json.dumps(report, indent=2) if as_json else "\n".join(lines))


def cmd_data(args: argparse.Namespace) -> int:
    from sftlib import data_report

    cfg = _inspect_config(args, DATASET_KEYS)
    task = get_task(cfg.task)
    dataset = task.load_data(cfg)
    pool = task.load_pool(cfg)
    share = args.min_label_share if args.min_label_share is not None \
        else data_report.MIN_LABEL_SHARE
    report = data_report.inspect_data(dataset, pool, share)
    leaks = {f"{p['from']}->{p['to']}": p["normalized_rows"] for p in report["leakage"]["pairs"]}
    _print_report(report, args.json, [
        f"rows per split: { {s: v['rows'] for s, v in report['splits'].items()} }",
        f"smallest label: {report['labels']['smallest']}",
        f"leaked rows (normalized): {leaks}",
        f"texts with conflicting labels: {report['conflicting_labels']['texts']}",
        *[f"FINDING: {f}" for f in report["findings"]],
        *[f"warning: {w}" for w in report["warnings"]]])
    if cfg.strict_data and report["findings"]:
        print("sftlib: strict_data: " + "; ".join(report["findings"]), file=sys.stderr)
        return 1
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    from sftlib import tokens

    cfg = _inspect_config(args, (*DATASET_KEYS, "model", "max_length", "batch_size"))
    task = get_task(cfg.task)
    tokenizer = tokens.load_tokenizer(cfg.model)
    # count what the model reads (instruction: the rendered conversations)
    dataset = task.inspection_texts(cfg, task.load_data(cfg), tokenizer)
    report = tokens.inspect_tokens(dataset, tokenizer, cfg.max_length, cfg.batch_size,
                                   seed=cfg.seed)
    train = report["truncation"].get("train", {})
    waste = report["padding_waste"]["schemes"]
    _print_report(report, args.json, [
        f"tokenizer: {report['tokenizer']['class']}, vocabulary "
        f"{report['tokenizer']['vocab_size']:,}",
        f"max_length {report['max_length']} (suggested {report['suggested_max_length']}); "
        f"train truncated: {train.get('truncated_share', 0):.2%} of examples, "
        f"{train.get('tokens_lost_share', 0):.2%} of tokens",
        f"UNK rate (train): {report['unk']['per_split'].get('train', {}).get('unk_rate', 0):.4%}",
        *[f"padding {name}: {row['pad_share']:.1%} pad, compute x{row['compute_ratio']:.3f}"
          for name, row in waste.items()]])
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    """Score a saved classifier on a split. The data needs no train split: a file is scored
    whole as `--split`, a folder by the split files it holds, labels checked against the
    model's own. Without a train split the majority-class baseline is skipped; without both
    validation and test, temperature scaling; each skip is said on stderr and in "skipped"."""
    from transformers import AutoConfig

    from sftlib import analysis, data
    from sftlib.deploy import Predictor, check_model_dir, trained_config
    from sftlib.report import write_json_atomic

    model_dir = check_model_dir(args.model)
    # the model's own run decides the dataset, its subsets and the seed, unless overridden
    changes = {"dataset": args.dataset} if args.dataset else {}
    cfg = trained_config(model_dir, {**changes, **parse_overrides(args.overrides)})
    model_config = AutoConfig.from_pretrained(model_dir)
    names = [model_config.id2label[i] for i in range(model_config.num_labels)]
    dd = data.load_evaluation_from_config(cfg, args.split, names)
    predictor = Predictor(model_dir, batch_size=args.batch_size)
    frames = {split: analysis.prediction_frame(predictor, dd[split])
              for split in ("validation", "test") if split in dd}
    frame = frames[args.split]
    skipped = []
    calibration = (frames["validation"], frames["test"]) if len(frames) == 2 else None
    if calibration is None:
        skipped.append("temperature scaling (it is fitted on validation, reported on test)")
    baselines = None
    if not args.no_baselines:
        base = analysis.pretrained_predictor(cfg, str(model_dir), names, args.batch_size)
        baselines = {"fine-tuned": frame,
                     "before fine-tuning": analysis.prediction_frame(base, dd[args.split])}
        if "train" in dd:
            baselines["majority class"] = analysis.majority_frame(frame, dd["train"]["label"])
        else:
            skipped.append(f"the majority-class baseline ({cfg.dataset} has no train split)")
    for what in skipped:
        print(f"sftlib: analyze: skipped {what}", file=sys.stderr)
    summary = {"model": str(model_dir), "dataset": cfg.dataset, "split": args.split,
               **analysis.analysis_summary(frame, calibration, baselines),
               "skipped": skipped}
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / f"analysis_{args.split}.json", summary)
        analysis.with_slices(frame).to_csv(out / f"predictions_{args.split}.csv", index=False)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(analysis.summary_text(summary))
    return 0


COMMANDS = {"run": cmd_run, "runs": cmd_runs, "train": cmd_train, "assets": cmd_assets,
            "config": cmd_config, "predict": cmd_predict, "export": cmd_export,
            "serve": cmd_serve, "sweep": cmd_sweep, "compare": cmd_compare, "data": cmd_data,
            "tokens": cmd_tokens, "analyze": cmd_analyze}


def _quiet_progress_bars() -> None:
    """A terminal command prints its own lines: no weight-loading, shard-writing or
    dataset-map bars (HF_HUB_DISABLE_PROGRESS_BARS=0 keeps them). datasets read their
    environment variable when imported, before main() runs: hence the calls."""
    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == "0":
        return
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()


def _quiet_after_interrupt() -> None:
    """An interrupted notebook leaves papermill's cell task with a dead kernel; asyncio would
    print its traceback at exit. The one line the user gets says what happened."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("SFTLIB_LOG", "WARNING"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_progress_bars()
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` ends a run as Ctrl-C does
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        _quiet_after_interrupt()
        print("sftlib: interrupted", file=sys.stderr)
        return 130
    except ConfigError as error:
        print(f"sftlib: config error: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, FileExistsError, ValueError, AssetError) as error:
        print(f"sftlib: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
