"""docs/metrics.md is the catalogue's table: this test fails when the file is stale.

Regenerate it with CORRAL_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_exporter_docs.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from enforce.metrics import FAMILIES
from monitor.exporter.metrics import CATALOGUE, markdown

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def test_docs_metrics_md_is_generated_from_the_catalogue() -> None:
    text = markdown(FAMILIES)
    if os.environ.get("CORRAL_UPDATE_GOLDEN") == "1":
        DOCS.write_text(text, encoding="utf-8")
    assert DOCS.read_text(encoding="utf-8") == text, (
        "docs/metrics.md is stale: regenerate it with "
        "CORRAL_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_exporter_docs.py"
    )


def test_every_metric_has_a_row_naming_its_kernel_file() -> None:
    rows = [line for line in markdown(FAMILIES).splitlines() if line.startswith("| `corral_")]
    assert len(rows) == len(CATALOGUE) + len(FAMILIES)
    for metric, row in zip([*CATALOGUE, *FAMILIES], rows, strict=True):
        assert row.startswith(f"| `{metric.name}` | {metric.type} |")
        assert f"`{metric.source}`" in row
