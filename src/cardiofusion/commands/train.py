"""``cardiofusion train``: train a model on a preprocessing cache into a resumable run folder."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from pathlib import Path
from typing import Any

from ..errors import ConfigError


#: built-in task names shown by ``--help`` (kept equal to ``cardiofusion.tasks.builtin_tasks()`` by the tests;
#: listed here because importing the tasks package loads the model code).
BUILTIN_TASK_NAMES = ("aortic_stenosis", "as_severity", "cac_severity", "echo_measurements", "cardiac_multilabel",
                      "ptbxl_superclass", "ptbxl_lvh", "nih_cardiomegaly")


class _FusionChoices:
    """``--fusion`` choices: the fusion heads registered in :mod:`cardiofusion.models` (read from the
    registry when argparse checks a value or prints help, so building the parser imports no model code)."""

    @staticmethod
    def _names() -> list[str]:
        from ..models import list_fusions

        return list_fusions()

    def __iter__(self):
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (the paper's recipe by default) on a cache; resumable run folder",
        description="Train an ECG / X-ray / fusion model on a preprocessing cache and a cohort manifest. "
        "Defaults are the reference paper's recipe (Adam lr 1e-4, batch 64, cosine T_max 10, up to 100 "
        "epochs, early stopping patience 20, mixed precision on GPU). Options override --config, which "
        "overrides the defaults. The run folder holds config.yaml, checkpoints/, metrics.csv, "
        "val_scores.csv, result.json and reproduce.txt.",
    )
    p.add_argument("--cache", help="preprocessing cache folder (cardiofusion cache build)")
    p.add_argument("--manifest", help="cohort manifest with split and label (cardiofusion cohort build)")
    p.add_argument("--out", help="run folder to create")
    p.add_argument("--resume", metavar="RUN",
                   help="continue RUN from RUN/checkpoints/last.ckpt with its saved config "
                        "(only --max-epochs, --num-workers, --devices, --accelerator, --strategy, "
                        "--tensorboard may change)")
    p.add_argument("--config", metavar="YAML", help="training config (a run's config.yaml or a hand-written subset)")
    p.add_argument("--task", metavar="NAME|FILE",
                   help="what the model learns: a built-in task (" + ", ".join(BUILTIN_TASK_NAMES) + ") or a task "
                        "file (YAML/JSON, see cardiofusion.tasks); default: aortic_stenosis, the binary 'label' column")
    m = p.add_argument_group("model")
    m.add_argument("--fusion", choices=_FusionChoices(), metavar="NAME",
                   help="registered fusion head: %(choices)s (default: cooperative)")
    m.add_argument("--ecg-encoder", help="registered ECG encoder name (default: ecg_resnet50_transformer)")
    m.add_argument("--cxr-encoder", help="X-ray encoder preset or timm model name (default: efficientnet_b0)")
    m.add_argument("--cxr-weights", metavar="PATH|timm|none",
                   help="X-ray encoder ImageNet weights: a local weights file, 'timm' (download), or none")
    m.add_argument("--rho", type=float, help="cooperative agreement strength (default: 0.5)")
    m.add_argument("--leads", help="comma-separated ECG leads, canonical order (default: all 12)")
    m.add_argument("--init-ecg", metavar="RUN", help="warm start: copy the ECG encoder of a trained run")
    m.add_argument("--init-cxr", metavar="RUN", help="warm start: copy the X-ray encoder of a trained run")
    t = p.add_argument_group("training")
    t.add_argument("--lr", type=float, help="Adam learning rate (default: 1e-4)")
    t.add_argument("--batch-size", type=int, help="batch size (default: 64)")
    t.add_argument("--max-epochs", type=int, help="maximum epochs (default: 100)")
    t.add_argument("--patience", type=int, help="early stopping patience on val_loss (default: 20)")
    t.add_argument("--precision", help="Lightning precision: auto (16-mixed on CUDA, 32-true on CPU), "
                                       "32-true, 16-mixed, bf16-mixed, ...")
    t.add_argument("--pos-weight", help="positive-class weight: a number, 'balanced' or none (default: none)")
    t.add_argument("--seed", type=int, help="random seed (default: 0)")
    t.add_argument("--image-size", type=int, help="X-ray side fed to the model, pixels (default: 224)")
    t.add_argument("--fs", type=float, help="ECG sampling rate of the model in Hz; must equal the cache's (default: 500)")
    t.add_argument("--limit-train-batches", type=float,
                   help="batches per epoch: a fraction (<= 1) or a count (> 1), for quick runs")
    h = p.add_argument_group("hardware")
    h.add_argument("--accelerator", help="Lightning accelerator: auto, cpu, gpu (default: auto)")
    h.add_argument("--devices", help="Lightning devices: auto, a count, or ids like 0,1 (default: auto)")
    h.add_argument("--strategy", help="Lightning strategy: auto, ddp, ... (default: auto)")
    h.add_argument("--num-nodes", type=int, help="nodes for multi-node training (default: 1)")
    h.add_argument("--num-workers", type=int, help="data loader processes (default: 4)")
    p.add_argument("--tensorboard", action="store_true", default=None, help="also write TensorBoard logs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _devices(value: str) -> Any:
    value = value.strip()
    if "," in value:
        return [int(v) for v in value.split(",") if v.strip()]
    return value


def _limit(value: float) -> int | float:
    import math

    from ..errors import ConfigError

    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"--limit-train-batches must be a fraction in (0, 1] or a batch count, got {value}")
    return int(value) if value > 1 else float(value)


def config_from_args(args: argparse.Namespace, base=None):
    """The TrainConfig an argument list describes (``base``: a saved or --config one)."""
    from ..transforms.preprocess import PreprocessConfig
    from ..training import TrainConfig

    config = base if base is not None else (TrainConfig.from_file(args.config) if args.config else TrainConfig())
    top: dict[str, Any] = {}
    for arg, key in (("cache", "cache_dir"), ("manifest", "manifest"), ("lr", "lr"), ("batch_size", "batch_size"),
                     ("max_epochs", "max_epochs"), ("patience", "patience"), ("precision", "precision"),
                     ("pos_weight", "pos_weight"), ("seed", "seed"), ("accelerator", "accelerator"),
                     ("strategy", "strategy"), ("num_nodes", "num_nodes"), ("num_workers", "num_workers"),
                     ("tensorboard", "tensorboard")):
        value = getattr(args, arg, None)
        if value is not None:
            top[key] = str(Path(value).resolve()) if arg in ("cache", "manifest") else value
    if getattr(args, "task", None) is not None:
        from ..tasks import load_task

        task = args.task
        if Path(task).suffix or Path(task).exists():
            task = str(Path(task).resolve())
        top["task"] = load_task(task).to_dict()
    if args.devices is not None:
        top["devices"] = _devices(args.devices)
    if args.limit_train_batches is not None:
        top["limit_train_batches"] = _limit(args.limit_train_batches)
    model: dict[str, Any] = {}
    for arg, key in (("fusion", "fusion"), ("ecg_encoder", "ecg_encoder"), ("cxr_encoder", "cxr_encoder"),
                     ("rho", "rho")):
        if getattr(args, arg, None) is not None:
            model[key] = getattr(args, arg)
    if args.cxr_weights is not None:
        w = args.cxr_weights.strip()
        model["cxr_pretrained"] = (False if w.lower() in ("none", "false", "") else
                                   "timm" if w.lower() == "timm" else str(Path(w).resolve()))
    preprocess: dict[str, Any] = {}
    if args.image_size is not None:
        preprocess["image_size"] = args.image_size
    if getattr(args, "fs", None) is not None:
        preprocess["fs"] = args.fs
    init = {m: str(Path(v).resolve()) for m, v in (("ecg", getattr(args, "init_ecg", None)),
                                                   ("cxr", getattr(args, "init_cxr", None))) if v}
    if init:
        top["init_from"] = {**config.init_from, **init}
    if args.leads is not None:
        leads = tuple(x.strip() for x in args.leads.split(",") if x.strip())
        preprocess["leads"] = model["leads"] = leads
    if model:
        top["model"] = dataclasses.replace(config.model, **model)
    if preprocess:
        top["preprocess"] = PreprocessConfig.from_dict({**config.preprocess.to_dict(), **preprocess})
    return TrainConfig.from_dict({**config.to_dict(), **{k: (v.to_dict() if hasattr(v, "to_dict") else v)
                                                         for k, v in top.items()}})


_NOT_OPTIONS = {"func", "command"}


def command_line(args: argparse.Namespace) -> str:
    """The ``cardiofusion train`` command equivalent to parsed arguments (for reproduce.txt)."""
    parts = ["cardiofusion", "train"]
    for key, value in vars(args).items():
        if key in _NOT_OPTIONS or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        parts += [flag] if value is True else [flag, shlex.quote(str(value))]
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    from ..training import TrainConfig, fit

    command = command_line(args)
    if args.resume:
        if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
            raise ConfigError("--resume RUN continues RUN in place; leave out --out")
        if args.config:
            raise ConfigError("--resume uses the run's saved config; leave out --config")
        run_dir = Path(args.resume)
        saved_path = run_dir / "config.yaml"
        base = TrainConfig.from_file(saved_path) if saved_path.is_file() else None
        config = config_from_args(args, base) if base is not None else None
        result = fit(config, run_dir, resume=True, progress=not args.no_progress, command=command)
    else:
        if not args.out:
            raise ConfigError("--out RUN is required (or --resume RUN)")
        config = config_from_args(args)
        if not config.cache_dir or not config.manifest:
            raise ConfigError("--cache and --manifest are required (or set cache_dir / manifest in --config)")
        result = fit(config, args.out, progress=not args.no_progress, command=command)
    metric = ("val AUROC" if result.metric == "auroc" else f"val {result.metric.replace('_', ' ')}")
    value = result.val_auroc if result.metric == "auroc" else result.val_metric
    print(f"best epoch {result.best_epoch} of {result.epochs_trained}"
          f"{' (stopped early)' if result.stopped_early else ''}: val loss {result.best_val_loss:.4f}, "
          f"{metric} {value:.3f}")
    print(f"run folder: {result.run_dir}")
    print(f"  best checkpoint  {result.best_checkpoint}")
    print(f"  metrics          {result.metrics_csv}")
    print(f"  val scores       {result.val_scores}")
    print(f"  summary          {result.result_json}")
    return 0
