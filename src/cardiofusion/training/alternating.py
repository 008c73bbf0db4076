"""Cooperative learning fitted the way Ding et al. (PNAS 2022) fit it: one view at a time, each refitted to its
partial residual, on the frozen features of two trained branches.

The objective is the one :class:`~cardiofusion.models.fusion.CooperativeFusion` trains by joint gradient descent,
with a ridge penalty::

    1/2 ||y - f_x - f_z||^2 + rho/2 ||f_x - f_z||^2 + lam/2 (||a||^2 + ||b||^2),   f_x = X a,  f_z = Z b

Fixing ``f_z``, the minimiser over ``a`` is a ridge regression of ``y / (1 + rho) - (1 - rho) / (1 + rho) f_z``
on ``X`` with penalty ``lam / (1 + rho)`` (the paper's Algorithm 1 update), and likewise for ``b``.  Block
coordinate descent on this strictly convex objective converges to the joint minimiser, which is the ridge
regression on the augmented data ``[[X, Z], [-sqrt(rho) X, sqrt(rho) Z]]`` with targets ``[y; 0]`` (the test
checks that).  ``rho = 0`` is early fusion of the features (one least-squares fit), ``rho = 1`` fits each view
to ``y / 2`` alone (late fusion); features are standardised on the training records and the intercept is the
training mean of ``y``.

:func:`record_features` gives the per-record encoder features of a trained run (its evaluation windows averaged).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..errors import ConfigError


@dataclass
class AlternatingFit:
    """A fitted alternating cooperative model (:func:`fit_alternating`)."""

    rho: float
    alpha: float
    coef_x: np.ndarray
    coef_z: np.ndarray
    mean_x: np.ndarray
    scale_x: np.ndarray
    mean_z: np.ndarray
    scale_z: np.ndarray
    intercept: float
    n_iter: int
    converged: bool

    def branch_scores(self, X: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(f_x, f_z)``, each carrying half of the intercept (so that ``score = f_x + f_z``)."""
        fx = ((np.asarray(X, float) - self.mean_x) / self.scale_x) @ self.coef_x + self.intercept / 2
        fz = ((np.asarray(Z, float) - self.mean_z) / self.scale_z) @ self.coef_z + self.intercept / 2
        return fx, fz

    def predict(self, X: np.ndarray, Z: np.ndarray) -> np.ndarray:
        fx, fz = self.branch_scores(X, Z)
        return fx + fz


def _standardise(A: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = A.mean(axis=0)
    scale = A.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    return (A - mean) / scale, mean, scale


def _ridge_solver(A: np.ndarray, lam: float):
    """``t -> argmin ||t - A w||^2 + lam ||w||^2`` (through the smaller of the two Gram matrices)."""
    n, p = A.shape
    if p <= n:
        inv = np.linalg.solve(A.T @ A + lam * np.eye(p), A.T)
        return lambda t: inv @ t
    inv = np.linalg.solve(A @ A.T + lam * np.eye(n), np.eye(n))
    return lambda t: A.T @ (inv @ t)


def fit_alternating(X: np.ndarray, Z: np.ndarray, y: np.ndarray, *, rho: float, alpha: float = 1.0,
                    max_iter: int = 200, tol: float = 1e-7) -> AlternatingFit:
    """Fit cooperative learning by alternating ridge updates (module docstring).

    Args:
        X, Z: ``(n, p)`` and ``(n, q)`` features of the two views (training records).
        y: ``(n,)`` targets (0/1 labels for a binary task).
        rho: agreement strength (>= 0).
        alpha: ridge penalty ``lam`` on the standardised features.
        max_iter / tol: stop when the fitted values change by less than ``tol`` (RMS) or after ``max_iter`` sweeps.
    """
    X, Z, y = np.asarray(X, float), np.asarray(Z, float), np.asarray(y, float).ravel()
    if not (len(X) == len(Z) == len(y)) or len(y) < 2:
        raise ConfigError(f"alternating cooperative fit: views and labels must have the same >= 2 rows, got "
                          f"{len(X)}, {len(Z)}, {len(y)}")
    if not (math.isfinite(rho) and rho >= 0) or not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"alternating cooperative fit: rho must be >= 0 and alpha > 0, got {rho}, {alpha}")
    Xs, mx, sx = _standardise(X)
    Zs, mz, sz = _standardise(Z)
    intercept = float(y.mean())
    yc = y - intercept
    lam = alpha / (1.0 + rho)
    solve_x, solve_z = _ridge_solver(Xs, lam), _ridge_solver(Zs, lam)
    a, b = np.zeros(Xs.shape[1]), np.zeros(Zs.shape[1])
    fx, fz = np.zeros(len(y)), np.zeros(len(y))
    converged, it = False, 0
    for it in range(1, max_iter + 1):  # noqa: B007 (it is reported)
        a = solve_x(yc / (1 + rho) - (1 - rho) / (1 + rho) * fz)
        new_fx = Xs @ a
        b = solve_z(yc / (1 + rho) - (1 - rho) / (1 + rho) * new_fx)
        new_fz = Zs @ b
        change = math.sqrt(float(np.mean((new_fx - fx) ** 2 + (new_fz - fz) ** 2)))
        fx, fz = new_fx, new_fz
        if change < tol:
            converged = True
            break
    return AlternatingFit(float(rho), float(alpha), a, b, mx, sx, mz, sz, intercept, it, converged)


@torch.no_grad()
def record_features(run: Any, split: str, *, modality: str, cache_dir: str | os.PathLike | None = None,
                    manifest: str | os.PathLike | None = None, batch_size: int = 64) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-record ``modality`` encoder features of a trained run on one split (windows averaged).

    Returns ``(table, features)``: ``table`` has ``record_id``, ``patient_id``, ``label`` in the loader's
    order and ``features`` is ``(n_records, d)``.
    """
    from ..data.dataset import CohortDataModule
    from .evaluate import _mean_by_index, model_batch, move_batch, record_rows
    from .inference import LoadedRun, load_run

    loaded = run if isinstance(run, LoadedRun) else load_run(run)
    config = loaded.config
    dm = CohortDataModule(cache_dir or config.cache_dir, manifest if manifest is not None else config.manifest,
                          config.preprocess, batch_size=batch_size, eval_batch_size=batch_size, num_workers=0,
                          modalities=(modality,), seed=config.seed)
    dm.setup()
    model = loaded.model.eval()
    device = next(model.parameters()).device
    ids, patients, labels, feats = [], [], [], []
    for batch in dm.eval_dataloader(split):
        batch = move_batch(batch, device)
        f, _ = model.encode(model_batch(batch))
        if f.get(modality) is None:
            raise ConfigError(f"{loaded.run_dir or loaded.checkpoint}: the model has no {modality} encoder")
        agg = _mean_by_index(f[modality], batch["record_index"].long(), int(batch["n_records"]))
        first = record_rows(batch)
        ids += [batch["record_id"][i] for i in first]
        patients += [batch["patient_id"][i] for i in first]
        labels.append(batch["label"][torch.as_tensor(first)].float().cpu().numpy())
        feats.append(agg.cpu().numpy())
    table = pd.DataFrame({"record_id": [str(i) for i in ids], "patient_id": [str(p) for p in patients],
                          "label": np.concatenate(labels) if labels else np.zeros(0)})
    return table, (np.concatenate(feats) if feats else np.zeros((0, 0)))


__all__ = ["AlternatingFit", "fit_alternating", "record_features"]
