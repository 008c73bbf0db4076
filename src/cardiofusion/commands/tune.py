"""``cardiofusion tune --config BASE.yaml --out DIR``: Bayesian optimisation of rho, batch size and lr."""

from __future__ import annotations

import argparse
from typing import Any

EPILOG = """\
selection rule (the paper's):
  every trial trains one run (OUT/trials/trial_NNNN); its value is the validation AUROC at its
  lowest-validation-loss epoch; the best trial is the one with the highest value, and its weights are
  that run's best (lowest-val-loss) checkpoint. rho is searched only when the base model's fusion is
  'cooperative'. A base config with a task (task: in the YAML, or a run trained with --task) tunes
  that task's primary metric instead: macro AUROC (multiclass, multilabel), quadratic-weighted kappa
  (ordinal), MAE (regression, minimised).

outputs (OUT):
  study.db      the Optuna study (default storage)      trials/trial_NNNN  one training run per trial
  tune.yaml     the resolved tuning settings           trials.csv         every trial: state, value,
  best.json     best trial: number, value, params,                        params, run_dir, checkpoint
                run dir, checkpoint                    study.json         which study owns OUT

examples:
  # the paper's search (cooperative model), 30 trials
  cardiofusion tune --config runs/coop/config.yaml --out runs/tune_coop --n-trials 30

  # the paper's ECG-only recipe: batch 32, lr log-uniform in [1e-7, 1e-3]
  cardiofusion tune --config runs/ecg/config.yaml --out runs/tune_ecg --batch-sizes 32 --lr-range 1e-7 1e-3

  # shorter trials: override base-config values (dotted keys reach nested settings)
  cardiofusion tune --config base.yaml --out runs/tune --set max_epochs=30 --set patience=5

  # several workers on several machines, one study in a shared database: run the same command on each
  # machine, with its own --seed (the folder may differ per machine; trial numbers are study-wide;
  # the database driver, e.g. psycopg2 for PostgreSQL, must be installed)
  cardiofusion tune --config base.yaml --out runs/tune --storage postgresql://user:pw@dbhost/optuna \\
      --study-name coop-v1 --n-trials 60 --seed 1        # machine 1 (--seed 2 on machine 2, ...)

  # one machine with 4 GPUs: one worker per GPU, one shared study
  for i in 0 1 2 3; do CUDA_VISIBLE_DEVICES=$i cardiofusion tune --config base.yaml --out runs/tune \
      --storage sqlite:///runs/tune/study.db --study-name coop-v1 --seed $i & done

resuming:
  re-run the same command (same --out, or same --storage and --study-name): trials already COMPLETE or
  PRUNED count toward --n-trials, and trials left RUNNING by a killed worker are marked FAIL and re-queued
  with the same parameters (trained again from scratch in a new trial folder). With the default SQLite
  file this happens at once on start (--fail-running); with an explicit --storage (possibly shared by live
  workers) a trial is failed only once its heartbeat is older than --grace-period seconds.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..training.tuning import PRUNERS, TuneConfig, field_help

    d = TuneConfig()
    h = field_help(TuneConfig)

    def doc(name: str, default: Any = None) -> str:
        text = h.get(name, "").replace("``", "").replace("%", "%%")
        return f"{text} (default: {default})" if default is not None else text

    p = sub.add_parser(
        "tune",
        help="Bayesian hyper-parameter search (Optuna): rho, batch size, learning rate",
        description="Tune a training recipe with Optuna's TPE sampler: rho (cooperative fusion) uniform in "
        "[0, 1], batch size in {64, 128}, learning rate log-uniform in [1e-6, 1e-3] by default; objective: "
        "validation AUROC (or the base config's task metric) at each trial's lowest-validation-loss epoch. Trials can be pruned, the study "
        "resumes after an interruption, and several workers can share one study through a database.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, metavar="YAML",
                   help="base training config (TrainConfig YAML, e.g. RUN/config.yaml of a 'cardiofusion train' "
                        "run); each trial replaces batch_size, lr and model.rho")
    p.add_argument("--out", default="runs/tune", help="tuning folder (default: %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base-config value (YAML value; dotted keys for nested settings, "
                        "e.g. max_epochs=30 or model.fusion=ecg); repeatable")
    p.add_argument("--n-trials", type=int, default=d.n_trials, help=doc("n_trials", d.n_trials))
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help=doc("timeout"))
    p.add_argument("--rho-range", type=float, nargs=2, default=list(d.rho_range), metavar=("LOW", "HIGH"),
                   help=doc("rho_range", f"{d.rho_range[0]:g} {d.rho_range[1]:g}"))
    p.add_argument("--no-rho", action="store_true", help="never tune rho (keep the base config's)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=list(d.batch_sizes), metavar="B",
                   help=doc("batch_sizes", " ".join(map(str, d.batch_sizes))))
    p.add_argument("--lr-range", type=float, nargs=2, default=list(d.lr_range), metavar=("LOW", "HIGH"),
                   help=doc("lr_range", f"{d.lr_range[0]:g} {d.lr_range[1]:g}"))
    p.add_argument("--storage", default=None, metavar="URL", help=doc("storage"))
    p.add_argument("--study-name", default=d.study_name, help=doc("study_name", d.study_name))
    p.add_argument("--pruner", choices=PRUNERS, default=d.pruner, help=doc("pruner", d.pruner))
    p.add_argument("--prune-warmup-epochs", type=int, default=d.prune_warmup_epochs,
                   help=doc("prune_warmup_epochs", d.prune_warmup_epochs))
    p.add_argument("--prune-startup-trials", type=int, default=d.prune_startup_trials,
                   help=doc("prune_startup_trials", d.prune_startup_trials))
    p.add_argument("--n-startup-trials", type=int, default=d.n_startup_trials,
                   help=doc("n_startup_trials", d.n_startup_trials))
    p.add_argument("--seed", type=int, default=d.seed, help=doc("seed", d.seed))
    p.add_argument("--heartbeat-interval", type=int, default=d.heartbeat_interval, metavar="SECONDS",
                   help=doc("heartbeat_interval", d.heartbeat_interval))
    p.add_argument("--grace-period", type=int, default=None, metavar="SECONDS", help=doc("grace_period"))
    p.add_argument("--fail-running", action=argparse.BooleanOptionalAction, default=None,
                   help=doc("fail_running"))
    p.add_argument("--max-retry", type=int, default=d.max_retry, help=doc("max_retry", d.max_retry))
    p.add_argument("--no-progress", action="store_true", help="no training progress bars")
    p.add_argument("--quiet", action="store_true", help="no Optuna log lines (trial lines are still printed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training.tuning import TuneConfig, load_base_config, override_config, tune

    base = load_base_config(args.config)
    if args.set:
        base = override_config(base, args.set)
    config = TuneConfig(
        base=base,
        n_trials=args.n_trials,
        timeout=args.timeout,
        rho_range=None if args.no_rho else tuple(args.rho_range),
        batch_sizes=tuple(args.batch_sizes),
        lr_range=tuple(args.lr_range),
        storage=args.storage,
        study_name=args.study_name,
        pruner=args.pruner,
        prune_warmup_epochs=args.prune_warmup_epochs,
        prune_startup_trials=args.prune_startup_trials,
        n_startup_trials=args.n_startup_trials,
        seed=args.seed,
        heartbeat_interval=args.heartbeat_interval,
        grace_period=args.grace_period,
        fail_running=args.fail_running,
        max_retry=args.max_retry,
    )
    if args.quiet:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = tune(config, args.out, progress=not args.no_progress)
    return 0 if result.best_number is not None else 1
