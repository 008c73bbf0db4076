"""Torch files are checked before anything is unpickled (cardiofusion.io.torchfile)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from cardiofusion import cli
from cardiofusion.errors import ReadError
from cardiofusion.io.torchfile import check_torch_file, read_torch_file
from cardiofusion.models.weights import read_state_dict
from cardiofusion.training.ecg_align import load_encoder_state
from cardiofusion.training.inference import load_run

#: 4 KiB of seeded random bytes on which torch.load's C unpickler raises MemoryError and later prints
#: "SystemError: deallocated bytearray object has exported buffers" (found by search; CI met such bytes).
UNPICKLER_BOMB_SEED = 215


@pytest.fixture()
def bomb(tmp_path):
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(np.random.default_rng(UNPICKLER_BOMB_SEED).bytes(4096))
    return path


def test_the_seeded_bytes_really_break_the_unpickler(bomb):
    with pytest.raises(MemoryError):
        torch.load(io.BytesIO(bomb.read_bytes()), map_location="cpu", weights_only=False)


@pytest.mark.parametrize("weights_only", [False, True])
def test_garbage_is_refused_before_unpickling(bomb, weights_only):
    with pytest.raises(ReadError, match=r"garbage\.ckpt: not a PyTorch checkpoint"):
        read_torch_file(bomb, weights_only=weights_only)
    with pytest.raises(ReadError, match="not a PyTorch"):
        load_run(bomb)
    with pytest.raises(ReadError, match="not a PyTorch weights file"):
        read_state_dict(bomb)
    with pytest.raises(ReadError, match="not a PyTorch ECG encoder weights file"):
        load_encoder_state(bomb)


def test_cli_names_the_garbage_checkpoint_in_one_line(bomb, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["export", "--out", str(tmp_path / "bundle"), "--", str(bomb)])
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    assert rc == 2
    assert lines == [f"cardiofusion: error: {bomb}: not a PyTorch checkpoint: neither a torch zip archive "
                     "(not unpickled)"]


def test_zip_and_legacy_layouts(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    zipped, legacy = tmp_path / "new.pt", tmp_path / "old.pth"
    torch.save(state, zipped)
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    for path in (zipped, legacy):
        assert torch.equal(read_torch_file(path)["w"], state["w"])
        assert torch.equal(read_state_dict(path)["w"], state["w"])
    assert torch.equal(read_torch_file(zipped, weights_only=False)["w"], state["w"])
    with pytest.raises(ReadError, match="old.pth: not a PyTorch checkpoint: neither a torch zip archive"):
        read_torch_file(legacy, weights_only=False)  # full unpickling only for the zip layout
    check_torch_file(legacy, allow_legacy=True)


def test_empty_truncated_and_non_files(tmp_path):
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(ReadError, match="empty.ckpt"):
        check_torch_file(empty)
    with pytest.raises(ReadError, match="no such checkpoint"):
        check_torch_file(tmp_path / "missing.ckpt")
    with pytest.raises(ReadError):
        check_torch_file(tmp_path)
    whole = tmp_path / "whole.pt"
    torch.save({"w": torch.ones(1000)}, whole)
    cut = tmp_path / "cut.pt"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReadError, match="cut.pt"):  # a truncated archive: zip check or torch.load fails
        read_torch_file(cut)
