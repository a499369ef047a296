"""The book's reliability page is the suite's own table: every fault row, rendered from its JSON."""

from __future__ import annotations

import json

from _table import FAULTS, JSON_PATH, PAGE_PATH, render


def test_the_reliability_page_holds_every_fault_row_the_suite_proves():
    doc = json.loads(JSON_PATH.read_text())
    assert [r["id"] for r in doc["rows"]] == list(FAULTS), (
        "book/reliability_faults.json is stale: run `pytest tests/faults` (all of it) to rewrite it")
    assert all(r["status"] == "verified" and r["test"] for r in doc["rows"])
    assert PAGE_PATH.read_text() == render(doc["rows"]), "book/reliability.md differs from its JSON"
