"""Every command, run with hostile arguments, fails with one line -- never a traceback (issue 13).

The commands are read from :data:`cardiofusion.cli.COMMANDS` and their parsers (nested actions such as
``cohort build`` included), so a new command or option is covered without editing this file.  Each
argument that takes a value gets, in turn, each hostile value of its kind:

* paths: missing (with spaces and non-ASCII letters), a directory, ``/dev/zero``, an empty file,
  binary garbage, JSON and YAML nested 200,000 levels deep, a path below a regular file;
* numbers: negative, zero where a count is expected, NaN, infinity, not a number.

The other arguments are anchors that no command can get past: required inputs are missing paths and
every output (required or not) is a path below a regular file, which cannot be created.  So only
argument checking and validation run: no training, no data generation, nothing written.  The assertions: exit
status 2, the last line of stderr is the error (``cardiofusion: error: ...`` for the library's checks,
``cardiofusion COMMAND: error: ...`` for argparse's own) and no ``Traceback`` anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import signal
from pathlib import Path

import numpy as np
import pytest

from cardiofusion import cli

#: Option names whose value is written, not read.
OUTPUT_DESTS = ("out", "output", "out_dir", "report")
#: Value-taking options left out: they name things that are not files and change nothing hostile
#: (``serve --host`` would bind to an address).
SKIP_DESTS = ("host", "allowed_host", "log_level", "storage", "study_name", "accelerator", "devices", "strategy",
              "precision", "title", "name", "patient_id", "set", "only", "record", "cxr_layer", "leads",
              "ecg_encoder", "cxr_encoder", "cxr_weights", "pos_weight", "init_ecg", "init_cxr")
#: Per-call guard: a hostile argument must be refused long before this (no timing is asserted).
GUARD_S = 120


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def leaf_commands() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """``(("cohort", "build"), parser), ...`` for every command of :data:`cli.COMMANDS`."""
    top = _subparsers(cli.build_parser())
    out: list[tuple[tuple[str, ...], argparse.ArgumentParser]] = []

    def walk(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
        sub = _subparsers(parser)
        if sub is None:
            out.append((path, parser))
            return
        seen: set[int] = set()
        for name, child in sub.choices.items():
            if id(child) not in seen:  # aliases share a parser
                seen.add(id(child))
                walk((*path, name), child)

    for name in cli.COMMANDS:
        walk((name,), top.choices[name])
    return out


def _value_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction))
            and a.nargs != 0 and not a.choices and a.dest not in SKIP_DESTS]


def _is_number(action: argparse.Action) -> bool:
    return action.type in (int, float)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, list[str]]:
    root = tmp_path_factory.mktemp("hostile dir ü")
    (root / "anchor.txt").write_text("a regular file: nothing can be created below it")
    (root / "a folder").mkdir()
    empty = root / "empty file.csv"
    empty.write_bytes(b"")
    garbage = root / "garbage ☃.bin"
    # seeded, so that a failure reproduces; these bytes make torch's C unpickler raise MemoryError
    # (test_torchfile.UNPICKLER_BOMB_SEED)
    garbage.write_bytes(np.random.default_rng(215).bytes(4096))
    garbage_csv = root / "garbage.csv"
    garbage_csv.write_bytes(b"\x00\xff\xfe" + np.random.default_rng(1).bytes(2048))
    deep_json = root / "deep.json"
    deep_json.write_text("[" * 200_000 + "]" * 200_000)
    deep_yaml = root / "deep.yaml"
    deep_yaml.write_text("[" * 200_000 + "]" * 200_000)
    deep_map = root / "deep map.json"
    deep_map.write_text('{"a":' * 200_000 + "1" + "}" * 200_000)
    paths = [str(root / "missing dossier é" / "no such file.csv"), str(root / "a folder"), "/dev/zero", str(empty),
             str(garbage), str(garbage_csv), str(deep_json), str(deep_yaml), str(deep_map),
             str(garbage / "below a file.csv")]
    # an output may legitimately be new or an (empty) folder: only the impossible ones are hostile there
    outputs = ["/dev/zero", str(empty), str(garbage), str(deep_json), str(garbage / "below a file")]
    return {"paths": paths, "outputs": outputs, "numbers": ["-5", "0", "nan", "inf", "-inf", "many"],
            "root": [str(root)]}


def _filled(parser: argparse.ArgumentParser, root: str, counter: list[int]) -> dict[argparse.Action, str]:
    """Anchors: every required input a missing path, every output a path below a regular file."""
    values: dict[argparse.Action, str] = {}
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or action.nargs == 0:
            continue
        required = action.required or not action.option_strings
        counter[0] += 1
        if action.dest in OUTPUT_DESTS and not action.choices:
            values[action] = str(Path(root) / "anchor.txt" / f"out {counter[0]}")
        elif not required:
            continue
        elif action.choices:
            values[action] = str(next(iter(action.choices)))
        elif _is_number(action):
            values[action] = "1"
        else:
            values[action] = str(Path(root) / f"missing input {counter[0]}.csv")
    return values


def _argv(path: tuple[str, ...], values: dict[argparse.Action, str]) -> list[str]:
    argv = list(path)
    positionals = [a for a in values if not a.option_strings]
    for action, value in values.items():
        if action.option_strings:
            argv += [action.option_strings[-1] if action.option_strings[-1].startswith("--")
                     else action.option_strings[0], value]
    argv += ["--"] + [values[a] for a in positionals] if positionals else []
    return argv


def cases(hostile: dict[str, list[str]]) -> list[list[str]]:
    root = hostile["root"][0]
    counter = [0]
    out: list[list[str]] = []
    for path, parser in leaf_commands():
        base = _filled(parser, root, counter)
        if any(v.endswith(".csv") and "missing input" in v for v in base.values()):
            out.append(_argv(path, base))  # every required input missing
        for action in _value_actions(parser):
            kinds = (hostile["numbers"] if _is_number(action) else
                     hostile["outputs"] if action.dest in OUTPUT_DESTS else hostile["paths"])
            for value in kinds:
                out.append(_argv(path, {**base, action: value}))
    return out


class _Timeout(Exception):
    pass


def _run(argv: list[str], guard_s: int = GUARD_S) -> tuple[int, str, str]:
    """``cli.main(argv)`` in this process with stdout/stderr captured (argparse's exit as its status)."""
    def alarm(signum, frame):
        raise _Timeout(f"no answer within {guard_s} s")

    out, err = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(guard_s)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli.main(argv)
            except SystemExit as e:  # argparse
                rc = e.code if isinstance(e.code, int) else 2
            except _Timeout:
                raise
            except BaseException:  # noqa: BLE001 - what the user would see
                import traceback

                traceback.print_exc()
                rc = -1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return rc, out.getvalue(), err.getvalue()


def visible_lines(text: str) -> list[str]:
    """The lines a terminal shows: a progress bar redrawn with carriage returns and cleared leaves nothing."""
    lines = [line.rsplit("\r", 1)[-1].strip() for line in text.split("\n")]
    return [line for line in lines if line]


def is_one_line_error(rc: int, out: str, err: str) -> bool:
    """Exit 2, no traceback, and stderr shows one ``cardiofusion: error: ...`` line (or argparse's usage +
    ``cardiofusion COMMAND: error: ...``)."""
    if rc != 2 or "Traceback" in out + err:
        return False
    lines = visible_lines(err)
    if len(lines) == 1 and lines[0].startswith("cardiofusion: error: "):
        return True
    return bool(lines) and lines[0].startswith("usage: cardiofusion") and lines[-1].startswith("cardiofusion ") \
        and ": error: " in lines[-1]


def test_every_command_is_enumerated():
    names = {path[0] for path, _ in leaf_commands()}
    assert names == set(cli.COMMANDS)
    assert ("cohort", "build") in {path for path, _ in leaf_commands()}


def test_hostile_arguments_give_one_line_errors(hostile, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    failures = []
    all_cases = cases(hostile)
    assert len(all_cases) > 100
    for argv in all_cases:
        rc, out, err = _run(argv)
        if not is_one_line_error(rc, out, err):
            failures.append(f"{argv!r} -> rc {rc}: {err.strip()[-600:]}")
    assert not failures, f"{len(failures)} of {len(all_cases)} hostile calls misbehaved:\n" + "\n".join(failures)


@pytest.mark.parametrize("argv_tail", [["--overwrite"], []])
def test_export_out_file_and_explain_file(hostile, tmp_path, argv_tail):
    """The named tracebacks of issue 13: ``export --out FILE --overwrite`` and ``--explain FILE``."""
    a_file = tmp_path / "existing.txt"
    a_file.write_text("keep")
    rc, _, err = _run(["predict", str(tmp_path / "no bundle"), "--ecg", str(a_file), "--explain", str(a_file)])
    assert rc == 2 and err.startswith(f"cardiofusion: error: {a_file}: --explain") and "Traceback" not in err
    run = tmp_path / "run"
    run.mkdir()
    rc, _, err = _run(["export", str(run), "--out", str(a_file), *argv_tail])
    assert rc == 2 and err.startswith(f"cardiofusion: error: {a_file}") and len(err.strip().splitlines()) == 1
    assert a_file.read_text() == "keep"
