"""Shared test fixtures.

Real public data lives in ``../shared/data`` beside the project root (present in CI, absent in a
user's clone): tests that need it take the ``shared_data`` fixture and skip cleanly without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CARDIOFUSION_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ``../shared/data`` (resolved: the adapters record resolved paths, and ``../shared`` may be a
    symbolic link); skips the test when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available at {SHARED_DATA}")
    return SHARED_DATA.resolve()


def build_tiny_cache(root: Path, *, fs: float, duration_s: float, image_size: int, cxr_size: int = 64,
                     n_patients: int = 30, delete_export: bool = False) -> dict[str, Path]:
    """synth -> cohort -> cache on a tiny clean export (30% AS so every split has cases), as the demo does.

    Returns ``{"root", "manifest", "cache"}``. With ``delete_export`` the raw files are removed afterwards,
    proving that whatever runs next reads the cache only.
    """
    import shutil

    from cardiofusion.cache import CacheConfig, build_cache
    from cardiofusion.cohort import CohortConfig, build_cohort
    from cardiofusion.synth import SynthConfig, generate_export

    export = root / "export"
    generate_export(export, SynthConfig(n_patients=n_patients, cxr_size=cxr_size, ecg_duration_s=duration_s,
                                        as_prevalence=0.3, compute_oracle=False, n_defective_ecg=0,
                                        n_defective_cxr=0), overwrite=True, progress=False)
    build_cohort(export / "ecg_index.csv", export / "cxr_index.csv", export / "echo_index.csv", root / "cohort",
                 CohortConfig())
    manifest = root / "cohort" / "manifest.parquet"
    build_cache(manifest, root / "cache", CacheConfig(fs=fs, duration_s=duration_s, image_size=image_size),
                workers=1, progress=False)
    if delete_export:
        shutil.rmtree(export)
    return {"root": root, "manifest": manifest, "cache": root / "cache"}


def train_tiny_runs(root: Path, cohort: dict[str, Path], *, fusions=("ecg", "cxr", "cooperative"), fs: float,
                    image_size: int, max_epochs: int = 1) -> dict[str, Path]:
    """Train the library's tiny registered encoders (as the demo does) on a ``build_tiny_cache`` cohort.

    Returns ``{fusion: run_dir}``; each run folder is complete (checkpoints, ``val_scores.csv``, ...), so
    ``cardiofusion.training.load_run`` / ``score_split`` work on it.
    """
    import dataclasses

    from cardiofusion.recipes.demo import demo_train_config
    from cardiofusion.training import fit

    runs = {}
    for fusion in fusions:
        config = demo_train_config(cohort["cache"], cohort["manifest"], fusion, max_epochs=max_epochs, fs=fs,
                                   image_size=image_size)
        config = dataclasses.replace(config, batch_size=16, eval_batch_size=32)
        runs[fusion] = fit(config, root / fusion, progress=False).run_dir
    return runs


# --------------------------------------------------------------------------------------------------
# Stand-in encoders (milliseconds per batch) for tests that train through the real fusion heads
# --------------------------------------------------------------------------------------------------
def _stand_in_classes():
    import torch
    from torch import nn

    class StatsECG(nn.Module):
        """Per-lead summary statistics -> linear -> mean over leads (any number of leads)."""

        def __init__(self, leads=(), width: int = 8):
            super().__init__()
            self.out_dim = width
            self.proj = nn.Linear(3, width)
            self.gradcam_layer = self.proj

        def forward(self, x, lead_mask=None):  # (B, L, T) -> (B, width)
            stats = torch.stack([x.mean(-1), x.std(-1), x.abs().amax(-1)], dim=-1)  # (B, L, 3)
            return torch.tanh(self.proj(stats)).mean(1)

    class ConvCXR(nn.Module):
        """One strided convolution -> global mean -> linear."""

        def __init__(self, pretrained=False, in_chans: int = 1, width: int = 8):
            super().__init__()
            self.out_dim = width
            self.conv = nn.Conv2d(in_chans, 4, 3, stride=2)
            self.head = nn.Linear(4, width)
            self.gradcam_layer = self.conv

        def forward(self, x):  # (B, 1, H, W) -> (B, width)
            return self.head(torch.relu(self.conv(x)).mean((-2, -1)))

    return StatsECG, ConvCXR


def register_stand_in_encoders(ecg_name: str = "test_ecg_stats", cxr_name: str = "test_cxr_conv") -> None:
    """Register the stand-in ECG and X-ray encoders under these names (once per name)."""
    from cardiofusion.models import register_cxr_encoder, register_ecg_encoder
    from cardiofusion.models.registry import CXR_ENCODERS, ECG_ENCODERS

    ecg_cls, cxr_cls = _stand_in_classes()
    if ecg_name not in ECG_ENCODERS:
        register_ecg_encoder(ecg_name)(ecg_cls)
    if cxr_name not in CXR_ENCODERS:
        register_cxr_encoder(cxr_name)(cxr_cls)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tiny models: they gain nothing from more, and on a busy machine
    OpenMP threads waiting for each other make them ~50x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
