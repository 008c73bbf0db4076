"""``configfile.jsonable``: the one converter of results to plain JSON (run results, metrics, benchmarks)."""

import json
import math
from pathlib import Path

import numpy as np

from cardiofusion.configfile import jsonable


def test_jsonable_plain_json_out():
    value = {"a": np.float32(1.5), "b": math.nan, "c": np.arange(3), "d": (1, np.int64(2)), "e": Path("/x"),
             1: np.inf, "f": [np.array([[0.5, np.nan]])], "g": np.bool_(True), "h": "text"}
    out = jsonable(value)
    assert out == {"a": 1.5, "b": None, "c": [0, 1, 2], "d": [1, 2], "e": "/x", "1": None, "f": [[[0.5, None]]],
                   "g": True, "h": "text"}
    assert json.loads(json.dumps(out, allow_nan=False)) == out  # strict JSON
    assert type(out["c"][0]) is int and type(out["a"]) is float
