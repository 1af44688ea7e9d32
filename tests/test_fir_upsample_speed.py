"""benchmarks/fir_upsample_speed.py runs end to end: the layer rows, the forward row, and float32 FIR upsampling
giving the bf16 forward's output (to bf16 rounding)."""
from __future__ import annotations

import json
from pathlib import Path


def test_fir_upsample_speed_runs(tmp_path: Path) -> None:
    """One repeat, one thread: three layer rows and the forward row, positive times, matching outputs."""
    from benchmarks import fir_upsample_speed as bench

    data = bench.main(["--threads", "1", "--repeats", "1", "--out", str(tmp_path)])
    on_disk = json.loads((tmp_path / "fir_upsample_speed.json").read_text())
    rows = on_disk["rows"]
    assert [r["shape"] for r in rows[:3]] == ["1x64x40x40", "1x64x80x80", "1x64x160x160"]
    assert rows[3]["case"].startswith("embedded prior forward") and len(rows) == 4 == len(data["rows"])
    assert all(r["fp32_ms"] > 0 and r["bf16_ms"] > 0 for r in rows)
    assert float(rows[3]["max_rel_diff"]) < 1e-2
    assert "| FIR upsample x2 |" in (tmp_path / "fir_upsample_speed.md").read_text()
