"""The sources `adaptloop ingest` reads and the delays it draws."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adaptloop.ingest import Delay, dataset_rows
from adaptloop.schemas.errors import ConfigError


def test_csv_and_parquet_rows_are_features_and_the_named_label(tmp_path):
    (tmp_path / "d.csv").write_text("age,plan,churned\n41,pro,true\n19,,false\n")
    pq.write_table(
        pa.table({"age": [41, 19], "plan": ["pro", None], "churned": [True, False]}),
        tmp_path / "d.parquet",
    )
    expected = [({"age": 41, "plan": "pro"}, True), ({"age": 19, "plan": None}, False)]
    assert list(dataset_rows(str(tmp_path / "d.csv"), "churned")) == expected
    assert list(dataset_rows(str(tmp_path / "d.parquet"), "churned")) == expected
    with pytest.raises(ConfigError, match="the columns: age, plan, churned"):
        list(dataset_rows(str(tmp_path / "d.csv"), "label"))


def test_river_datasets_by_name_and_a_clear_error_for_others():
    rows = list(dataset_rows("river:Phishing"))
    assert len(rows) == 1250 and isinstance(rows[0][1], bool)
    with pytest.raises(ConfigError, match="no such River dataset"):
        list(dataset_rows("river:NoSuchThing"))


def test_delays_are_parsed_and_drawn_as_stated():
    rng = random.Random(0)
    assert Delay.parse("fixed:1.5").draw(rng) == 1.5 == Delay.parse("1.5").draw(rng)
    assert all(0 <= Delay.parse("uniform:0,2").draw(rng) <= 2 for _ in range(100))
    draws = [Delay.parse("exp:2").draw(rng) for _ in range(20_000)]
    assert abs(sum(draws) / len(draws) - 2) < 0.1
    for bad in ("uniform:1", "exp:", "normal:1,2"):
        with pytest.raises(ConfigError, match="fixed:SECONDS"):
            Delay.parse(bad)
