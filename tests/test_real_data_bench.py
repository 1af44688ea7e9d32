"""benchmarks/real_data.py: the scale-fitted metrics, the table, and a smoke run (ZF and BART on the twix file)."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    """The benchmark module, loaded by path."""
    spec = importlib.util.spec_from_file_location("_real_data", REPO / "benchmarks" / "real_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_scale_fit_makes_metrics_unit_free(bench):
    rng = np.random.default_rng(0)
    ref = rng.random((32, 32))
    noisy = ref + 0.05 * rng.standard_normal(ref.shape)
    assert bench.ls_scale(ref, 3 * ref) == pytest.approx(1 / 3)
    a, b = bench.score(ref, noisy), bench.score(ref, 1e-4 * noisy)
    assert a["psnr"] == pytest.approx(b["psnr"], abs=1e-3) and a["ssim"] == pytest.approx(b["ssim"], abs=1e-4)
    assert bench.score(ref, ref)["nmse"] == 0 and bench.score(ref, -ref)["psnr"] == float("inf")   # magnitudes


def test_markdown_rows_and_errors(bench):
    rows = [{"case": "c", "reference": "r", "method": "SENSE", "psnr": 30.0, "ssim": 0.9, "seconds": 1.5,
             "settings": "N=20"},
            {"case": "c", "reference": "r", "method": "Alg4 SSOS", "error": "image too large"}]
    text = bench.markdown(rows, {"date": "d", "argv": "", "threads": 1, "load_before": [1], "load_after": [1]})
    assert "| c | r | SENSE | 30.00 | 0.9000 | 1.5 | N=20 |" in text
    assert "| c | r | Alg4 SSOS | - | - | - | error: image too large |" in text
    assert "python benchmarks/real_data.py" in text


def test_smoke_twix_zf_and_bart(bench, shared, tmp_path):
    if not bench.GRE.is_file():
        pytest.skip(f"{bench.GRE} not found")
    bench.main(["--methods", "", "--cases", "gre-uniform1d", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "real_data.json").read_text())
    methods = {r["method"]: r for r in data["rows"]}
    assert methods["ZF"]["shape"] == [160, 160] and methods["ZF"]["coils"] == 2
    assert 10 < methods["ZF"]["psnr"] < 40
    if shutil.which("bart"):
        assert methods["BART pics-l1"]["psnr"] > methods["ZF"]["psnr"]           # CS beats zero-filling
    assert (tmp_path / "real_data.md").is_file() and (tmp_path / "real_data.png").stat().st_size > 1000
