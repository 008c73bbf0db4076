"""The recipe registry, recipe configs, ``--set`` overrides, the shared ``ensure_run`` step and ``cardiofusion recipe``.

Training uses the stand-in encoders of conftest (milliseconds per batch) on a tiny synthetic cache, one epoch.
"""

from __future__ import annotations

from conftest import build_tiny_cache, register_stand_in_encoders

import json

import pytest
import yaml

from cardiofusion.errors import ConfigError, ReadError
from cardiofusion.recipes import (
    RECIPE_YAML,
    apply_overrides,
    ensure_run,
    get_recipe,
    is_run_folder,
    list_recipes,
    parse_override,
    save_recipe_config,
)

FS, IMAGE = 100.0, 32
ECG_ENCODER, CXR_ENCODER = "recipes_test_ecg", "recipes_test_cxr"


# --------------------------------------------------------------------------------------------------
# registry and configs
# --------------------------------------------------------------------------------------------------
def test_registry_lists_the_four_recipes(capsys):
    from cardiofusion.cli import main

    names = [r.name for r in list_recipes()]
    assert names == sorted(names)
    assert {"cardiacnets", "crossval", "demo", "fusion-benchmark", "reference", "cac-severity", "ls-emvae", "two-stage"} <= set(names)
    assert all(r.description and "\n" not in r.description for r in list_recipes())
    assert get_recipe("demo").config_cls.__name__ == "DemoConfig"
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; registered: .*crossval, demo"):
        get_recipe("nope")
    assert main(["recipe", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == names
    assert main(["recipe", "run", "nope", "--out", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cardiofusion: error: unknown recipe 'nope'") and "\n" not in err


@pytest.mark.parametrize("name", ["reference", "demo", "fusion-benchmark", "crossval", "cardiacnets"])
def test_config_round_trip_and_unknown_key(name, tmp_path):
    recipe = get_recipe(name)
    config = recipe.config_cls()
    data = config.to_dict()
    assert recipe.config_cls.from_dict(data).to_dict() == data
    # through recipe.yaml, the file `recipe run` writes
    path = save_recipe_config(name, config, tmp_path)
    assert path == tmp_path / RECIPE_YAML
    saved = yaml.safe_load(path.read_text())
    assert saved["recipe"] == name and saved["config"] == json.loads(json.dumps(data))
    assert recipe.config_cls.from_file(path).to_dict() == data
    # a misspelt key is an error naming it, never ignored
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**data, "n_bot": 3}))
    with pytest.raises(ConfigError, match="n_bot"):
        recipe.load_config(tmp_path / "bad.yaml")
    # a saved config of another recipe is refused
    other = "demo" if name != "demo" else "crossval"
    save_recipe_config(other, get_recipe(other).config_cls(), tmp_path / "other")
    with pytest.raises(ConfigError, match=f"recipe '{other}', not '{name}'"):
        recipe.load_config(tmp_path / "other" / RECIPE_YAML)


def test_set_parsing():
    assert parse_override("lr=3e-4") == (["lr"], 3e-4)
    assert parse_override("cache.fs=100") == (["cache", "fs"], 100)
    assert parse_override("rhos=[0, 0.5]") == (["rhos"], [0, 0.5])
    assert parse_override("cxr_weights=none") == (["cxr_weights"], None)
    assert parse_override("warm_start=false") == (["warm_start"], False)
    assert parse_override("name=ECG only") == (["name"], "ECG only")
    for bad in ("lr", "=3", "a..b=1"):
        with pytest.raises(ConfigError, match="KEY=VALUE"):
            parse_override(bad)

    ref = get_recipe("reference").config_cls()
    changed = apply_overrides(ref, ["cache.fs=100", "train.max_epochs=3", "per_model.ecg.lr=1e-3", "models=[ecg]"])
    assert changed.cache.fs == 100.0 and changed.models == ["ecg"]
    assert changed.train == {"max_epochs": 3} and changed.per_model["ecg"] == {"batch_size": 32, "lr": 1e-3}
    assert ref.cache.fs == 500.0  # a copy
    bench = apply_overrides(get_recipe("fusion-benchmark").config_cls(), ["rhos=[0, 1]", "fusion_lr=3e-5"])
    assert bench.rhos == (0.0, 1.0) and bench.fusion_lr == 3e-5
    with pytest.raises(ConfigError, match="unknown setting 'nope'"):
        apply_overrides(ref, ["nope=1"])
    with pytest.raises(ConfigError, match="nope"):
        apply_overrides(ref, ["cache.nope=1"])
    with pytest.raises(ConfigError, match="'n_boot' is not a nested setting"):
        apply_overrides(ref, ["n_boot.x=1"])
    with pytest.raises(ConfigError, match="duplicates"):
        apply_overrides(get_recipe("fusion-benchmark").config_cls(), ["rhos=[1, 1]"])


# --------------------------------------------------------------------------------------------------
# ensure_run
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    register_stand_in_encoders(ECG_ENCODER, CXR_ENCODER)
    return build_tiny_cache(tmp_path_factory.mktemp("recipes"), fs=FS, duration_s=4, image_size=IMAGE, n_patients=30)


def _config(tiny, fusion="ecg", **changes):
    from cardiofusion.models import ModelConfig
    from cardiofusion.training import TrainConfig
    from cardiofusion.transforms.preprocess import PreprocessConfig

    config = TrainConfig(cache_dir=str(tiny["cache"]), manifest=str(tiny["manifest"]),
                         model=ModelConfig(fusion=fusion, ecg_encoder=ECG_ENCODER, cxr_encoder=CXR_ENCODER),
                         preprocess=PreprocessConfig(fs=FS, window_s=2, eval_stride_s=2, image_size=IMAGE),
                         batch_size=16, eval_batch_size=32, lr=1e-2, max_epochs=1, patience=1, num_workers=0,
                         accelerator="cpu")
    return config.replace(**changes)


def _no_training(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("fit was called")

    monkeypatch.setattr("cardiofusion.training.fit", boom)


def test_ensure_run_reuses_resumes_and_retrains(tiny, tmp_path, monkeypatch):
    run = tmp_path / "a"
    lines: list[str] = []
    first = ensure_run(_config(tiny), run, progress=False, log=lines.append)
    assert first.action == "trained" and (run / "result.json").is_file() and (run / "sources.json").is_file()
    assert is_run_folder(run)
    sources = json.loads((run / "sources.json").read_text())["inputs"]
    assert set(sources) == {"manifest", "cache"}

    with monkeypatch.context() as m:  # unchanged: reused, fit is never called
        _no_training(m)
        again = ensure_run(_config(tiny), run, progress=False, log=lines.append)
    assert again.action == "reused" and again.val_auroc == pytest.approx(first.val_auroc, nan_ok=True)
    assert again.result.best_checkpoint == first.result.best_checkpoint
    assert any("reusing the finished run" in line for line in lines)

    (run / "result.json").unlink()  # interrupted after its last checkpoint: resumed with the same settings
    assert ensure_run(_config(tiny), run, progress=False).action == "resumed"
    assert (run / "result.json").is_file()

    changed = ensure_run(_config(tiny, lr=5e-3), run, progress=False)  # another setting: retrained
    assert changed.action == "trained"
    assert yaml.safe_load((run / "config.yaml").read_text())["lr"] == 5e-3


def test_ensure_run_retrains_when_a_warm_start_source_changed(tiny, tmp_path, monkeypatch):
    a, b = tmp_path / "A", tmp_path / "B"
    ensure_run(_config(tiny), a, progress=False)
    b_config = _config(tiny, fusion="late", init_from={"ecg": str(a)})
    assert ensure_run(b_config, b, progress=False).action == "trained"
    recorded = json.loads((b / "sources.json").read_text())["inputs"]["init_from.ecg"]
    assert recorded["source"] == str(a) and len(recorded["sha256"]) == 64
    with monkeypatch.context() as m:
        _no_training(m)
        assert ensure_run(b_config, b, progress=False).action == "reused"

    # A retrained with another seed: B's config is unchanged, but its source is not -> B is retrained
    assert ensure_run(_config(tiny, seed=1), a, progress=False).action == "trained"
    with monkeypatch.context() as m:
        _no_training(m)
        with pytest.raises(AssertionError, match="fit was called"):
            ensure_run(b_config, b, progress=False)
    assert ensure_run(b_config, b, progress=False).action == "trained"
    assert json.loads((b / "sources.json").read_text())["inputs"]["init_from.ecg"]["sha256"] != recorded["sha256"]


def test_ensure_run_refuses_to_delete_a_folder_that_is_not_a_run(tiny, tmp_path, monkeypatch):
    _no_training(monkeypatch)
    data = tmp_path / "data"
    data.mkdir()
    (data / "patients.csv").write_text("precious\n")
    with pytest.raises(ReadError, match="not a cardiofusion run folder"):
        ensure_run(_config(tiny), data, progress=False)
    # a run folder with a user's file added is not deleted either
    (data / "config.yaml").write_text("lr: 0.1\n")
    assert not is_run_folder(data)
    with pytest.raises(ReadError, match="refusing to delete"):
        ensure_run(_config(tiny), data, progress=False)
    assert (data / "patients.csv").read_text() == "precious\n"


def test_ensure_run_names_a_missing_warm_start_source(tiny, tmp_path):
    with pytest.raises(ReadError, match=r"init_from\['ecg'\]: no such run folder or checkpoint"):
        ensure_run(_config(tiny, fusion="late", init_from={"ecg": str(tmp_path / "missing")}), tmp_path / "b",
                   progress=False)


# --------------------------------------------------------------------------------------------------
# cardiofusion recipe run, end to end
# --------------------------------------------------------------------------------------------------
def test_recipe_run_reference_end_to_end_then_reuses(tiny, tmp_path, capsys, monkeypatch):
    from cardiofusion.cli import main

    config = tmp_path / "reference.yaml"
    config.write_text(yaml.safe_dump({
        "cohort": str(tiny["manifest"].parent), "cache_dir": str(tiny["cache"]), "n_boot": 20, "subgroups": [],
        "progress": False, "per_model": {},
        "train": {"model": {"ecg_encoder": ECG_ENCODER, "cxr_encoder": CXR_ENCODER, "cxr_pretrained": False},
                  "preprocess.window_s": 2, "preprocess.eval_stride_s": 2, "preprocess.image_size": IMAGE,
                  "batch_size": 16, "eval_batch_size": 32, "lr": 1e-2, "max_epochs": 1, "patience": 1,
                  "num_workers": 0, "accelerator": "cpu"}}))
    out = tmp_path / "out"
    argv = ["recipe", "run", "reference", "--config", str(config), "--set", "n_boot=25", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "recipe: reference" in printed and "n_boot: 25" in printed  # the resolved config is printed
    saved = yaml.safe_load((out / RECIPE_YAML).read_text())
    assert saved["recipe"] == "reference" and saved["config"]["n_boot"] == 25
    assert printed.count("training into") == 3
    info = json.loads((out / "reference.json").read_text())
    assert [r["action"] for r in info["runs"].values()] == ["trained"] * 3
    coop = yaml.safe_load((out / "runs" / "cooperative" / "config.yaml").read_text())
    assert coop["init_from"] == {"ecg": str((out / "runs" / "ecg").resolve()),
                                 "cxr": str((out / "runs" / "cxr").resolve())}
    assert coop["preprocess"]["fs"] == FS  # read from the cache
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert {"ECG only", "X-ray only", "Cooperative"} <= set(metrics) and metrics["settings"]["n_boot"] == 25

    with monkeypatch.context() as m:  # the same command again: every run is reused
        _no_training(m)
        assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("reusing the finished run") == 3 and "training into" not in printed

    # a change of the cooperative model's settings retrains it alone
    assert main(argv + ["--set", "per_model.cooperative.lr=0.005"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("reusing the finished run") == 2 and printed.count("training into") == 1
    assert "Cooperative: training into" in printed
    # a bad --set is one line, exit status 2
    assert main(argv + ["--set", "n_boots=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown setting 'n_boots'" in err and "\n" not in err


def test_reference_tunes_then_trains_the_best_trial(tiny, tmp_path, monkeypatch):
    from cardiofusion.recipes import ReferenceConfig

    recipe = get_recipe("reference")
    config = ReferenceConfig.from_dict({
        "cohort": str(tiny["manifest"]), "cache_dir": str(tiny["cache"]), "models": ["ecg"], "n_boot": 20,
        "subgroups": [], "progress": False, "per_model": {}, "tune_trials": 2, "tune_per_model": {},
        "tune": {"lr_range": [1e-3, 1e-2], "batch_sizes": [16], "pruner": "none", "n_startup_trials": 2},
        "train": {"model": {"ecg_encoder": ECG_ENCODER, "cxr_encoder": CXR_ENCODER, "cxr_pretrained": False},
                  "preprocess": {"window_s": 2, "eval_stride_s": 2, "image_size": IMAGE}, "eval_batch_size": 32,
                  "max_epochs": 1, "patience": 1, "num_workers": 0, "accelerator": "cpu"}})
    out = tmp_path / "ref"
    lines: list[str] = []
    info = recipe.run(config, out, log=lines.append)
    (study,) = (out / "tuning").iterdir()
    assert study.name.startswith("ecg-")
    best = json.loads((study / "best.json").read_text())
    run = yaml.safe_load((out / "runs" / "ecg" / "config.yaml").read_text())
    assert run["lr"] == pytest.approx(best["best"]["params"]["lr"]) and run["batch_size"] == 16
    assert info["runs"]["ecg"]["action"] == "trained"
    with monkeypatch.context() as m:  # re-run: the finished study and the final run are reused
        _no_training(m)
        again = recipe.run(config, out, log=lines.append)
    assert again["runs"]["ecg"]["action"] == "reused" and len(list((out / "tuning").iterdir())) == 1
