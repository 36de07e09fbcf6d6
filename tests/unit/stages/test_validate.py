"""Inferred expectations: a numeric column's range is inferred with headroom, so data may move
but an impossible value is refused."""

from __future__ import annotations

import pandas as pd
import pytest

from conveyor.stages.validate import check, infer


@pytest.mark.parametrize(
    ("observed", "value", "ok"),
    [
        pytest.param([32.1, 45.0, 59.6], -50.0, False, id="a-negative-bill-length"),
        pytest.param([32.1, 45.0, 59.6], 15.0, False, id="below-the-headroom"),
        pytest.param([1.0, 2.0, 3.0], 0.0, True, id="the-headroom-reaches-zero"),
        pytest.param([1.0, 2.0, 3.0], -0.5, False, id="but-not-below-it-for-a-column-never-negative"),
        pytest.param([32.1, 45.0, 59.6], 70.0, True, id="a-little-beyond-the-largest"),
        pytest.param([32.1, 45.0, 59.6], 500.0, False, id="far-beyond-the-largest"),
        pytest.param([-3.0, 1.0, 5.0], -6.0, True, id="a-signed-column-may-go-lower"),
        pytest.param([7.0, 7.0, 7.0], 9.0, True, id="a-constant-column-gets-half-its-value"),
        pytest.param([7.0, 7.0, 7.0], 20.0, False, id="but-not-three-times-it"),
    ],
)
def test_an_inferred_range_refuses_what_could_not_be(observed: list[float], value: float, ok: bool) -> None:
    expectations = infer(pd.DataFrame({"bill_length_mm": observed}))
    problems = check(pd.DataFrame({"bill_length_mm": [value]}), expectations)
    assert (problems == []) is ok, problems
    if not ok:
        assert "bill_length_mm" in problems[0]


def test_strings_get_no_range() -> None:
    column = infer(pd.DataFrame({"island": ["Biscoe", "Dream"]})).columns["island"]
    assert (column.min, column.max, column.allowed) == (None, None, ["Biscoe", "Dream"])
