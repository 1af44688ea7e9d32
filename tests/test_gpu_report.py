"""benchmarks/gpu_report.py: the tiny CPU run covers every section; budget guard; one-line user errors."""
from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys

import pytest
import torch

from benchmarks import gpu_report
from conftest import REPO

SECTIONS = ("op_parity", "forward", "algorithm2", "training")


def numbers(obj):
    """Every int/float leaf of a JSON object (bools excluded)."""
    if isinstance(obj, dict):
        return [v for x in obj.values() for v in numbers(x)]
    if isinstance(obj, list):
        return [v for x in obj for v in numbers(x)]
    return [obj] if isinstance(obj, (int, float)) and not isinstance(obj, bool) else []


def strict_json(text: str) -> dict:
    """json.loads that refuses NaN / Infinity."""
    def bad(c):
        raise ValueError(f"non-standard JSON constant {c}")
    return json.loads(text, parse_constant=bad)


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    """One `--device cpu --tiny --out <tmp>` run as a subprocess (the documented check command)."""
    out = tmp_path_factory.mktemp("gpu_report")
    before = sorted(p.name for p in (REPO / "benchmarks" / "results").iterdir())
    res = subprocess.run([sys.executable, "benchmarks/gpu_report.py", "--device", "cpu", "--tiny", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    after = sorted(p.name for p in (REPO / "benchmarks" / "results").iterdir())
    return out, res, before, after


def test_tiny_cpu_run_writes_every_section_with_finite_numbers(tiny_report):
    out, res, before, after = tiny_report
    assert before == after, "--tiny with --out must not write into benchmarks/results"
    assert sorted(p.name for p in out.iterdir()) == ["gpu_cpu.json", "gpu_cpu.md"]
    report = strict_json((out / "gpu_cpu.json").read_text())
    assert report["meta"]["tiny"] is True and report["notes"] == [], report["notes"]
    for key in SECTIONS:
        rows = report[key]["rows"]
        assert rows, key
        for row in rows:
            vals = numbers(row)
            assert vals and all(math.isfinite(v) for v in vals), (key, row)
    md = (out / "gpu_cpu.md").read_text()
    assert md.strip() in res.stdout
    for title in ("op/ parity", "NCSN++ forward", "Algorithm 2", "Training steps per second"):
        assert title in md


def test_tiny_rows_cover_the_requested_grid(tiny_report):
    report = strict_json((tiny_report[0] / "gpu_cpu.json").read_text())
    parity = report["op_parity"]["rows"]
    assert {(r["op"], r["dtype"]) for r in parity} == {(o, d) for o in ("upfirdn2d", "fused_leaky_relu")
                                                        for d in ("float32", "bfloat16")}
    assert all(r["pytorch_forward"] <= r["tol"] and r["pytorch_backward"] <= r["tol"] for r in parity)
    assert "CUDA device" in report["op_parity"]["note"]  # no compiled rows on the CPU, and it says so
    fwd = report["forward"]["rows"]
    assert {(r["precision"], r["batch"]) for r in fwd} == {(p, b) for p in gpu_report.PRECISIONS
                                                           for b in gpu_report.TINY["batches"]}
    assert all(r["path"] == "pytorch" for r in fwd) and "CUDA device" in report["forward"]["note"]
    fp32 = [r for r in fwd if r["precision"] != "bf16"]
    assert all(r["rel_diff_vs_pytorch_fp32"] < 1e-5 for r in fp32)  # same math on the CPU
    alg2 = report["algorithm2"]["rows"]
    paper = [r for r in alg2 if r["N"] == gpu_report.TINY["paper_N"]]
    assert paper and paper[0]["predictor"] == "reverse_diffusion" and paper[0]["corrector"] == "langevin"
    # predictor (+ corrector) per step: the paper's sampler has a Langevin corrector, the few-step default none
    assert all(r["network_calls_per_slice"] == r["N"] * (2 if r["corrector"] == "langevin" else 1) for r in alg2)
    assert len(alg2) == 3 and all(r["output_finite"] for r in alg2)
    train = report["training"]["rows"]
    assert [r["config"] for r in train] == [gpu_report.KNEE, gpu_report.EMBEDDED]
    assert all(r["loss_finite"] and r["steps_per_s"] > 0 for r in train)
    assert [r["bf16"] for r in train] == [False, True]  # each config's own setting


def test_budget_guard_skips_with_notes_and_tiny_without_out_writes_nothing(capsys):
    before = sorted(p.name for p in (REPO / "benchmarks" / "results").iterdir())
    assert gpu_report.main(["--device", "cpu", "--tiny", "--budget_s", "0.001"]) == 0
    assert sorted(p.name for p in (REPO / "benchmarks" / "results").iterdir()) == before
    captured = capsys.readouterr()
    assert "nothing written" in captured.err and "## Notes" in captured.out
    report = gpu_report.run(gpu_report.parse_args(["--device", "cpu", "--tiny", "--budget_s", "0.001"]))
    assert report["forward"]["rows"] == [] and report["training"]["rows"] == []
    assert report["algorithm2"]["rows"] == []
    assert any("forward" in n and "skipped" in n for n in report["notes"])
    assert any("training" in n and "skipped" in n for n in report["notes"])


def test_algorithm2_run_cut_short_is_extrapolated():
    config = gpu_report.load_config(gpu_report.EMBEDDED, tiny=True)
    model = gpu_report.make_model(config, torch.device("cpu")).eval()
    row = gpu_report.time_algorithm2(model, config, torch.device("cpu"), 16, N=40, predictor="reverse_diffusion",
                                     corrector="langevin", snr=0.16, max_s=0.0)
    assert row["extrapolated"] and row["steps_timed"] == 1 and row["output_finite"] is None
    assert row["s_per_slice"] == pytest.approx(row["seconds_timed"] * 40)
    assert row["network_calls_per_slice"] == pytest.approx(80)


@pytest.mark.parametrize("argv,message", [
    (["--device", "cuda"], "CUDA is not available"),
    (["--device", "cpu"], "needs --tiny"),
    (["--device", "tpu", "--tiny"], "--device"),
    (["--device", "cpu", "--tiny", "--budget_s", "0"], "--budget_s"),
    (["--frobnicate"], "unrecognized arguments"),
])
def test_user_errors_are_one_line_exit_2_no_files(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_report.main(argv + ["--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_parity_section_reports_the_auto_decision_on_a_simulated_gpu(monkeypatch):
    """With 'CUDA' simulated (fake extensions on the CPU), the section shows built / fallback per op."""
    from types import SimpleNamespace

    from op import _jit
    from test_op_fallback import FakeFusedAct, FakeUpfirdn2d

    up_mod, act_mod = (importlib.import_module(m) for m in ("op.upfirdn2d", "op.fused_act"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(_jit, "check_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(_jit, "_STATE", {})
    fakes = {up_mod.EXTENSION: FakeUpfirdn2d(), act_mod.EXTENSION: FakeFusedAct("grad_ignores_slope")}
    monkeypatch.setattr(_jit, "build", lambda name, sources: fakes[name])
    for mod in (up_mod, act_mod):
        monkeypatch.setattr(mod, "_cuda_module", None)
    section = gpu_report.section_op_parity(SimpleNamespace(type="cuda"), gpu_report.Budget(60))
    assert section["decision"]["op.upfirdn2d"]["path"] == "cuda_ops"
    assert section["decision"]["op.fused_leaky_relu"]["path"] == "pytorch (fallback)"
    assert len(section["warnings"]) == 1 and "fused_leaky_relu" in section["warnings"][0]
    compiled = [r for r in section["rows"] if r["forward"] is not None]
    assert {r["op"] for r in compiled} == {"upfirdn2d", "fused_leaky_relu"}
    report = {"meta": {"device_name": "Fake GPU", "tiny": False, "torch": torch.__version__, "cuda": "x",
                       "elapsed_s": 1.0, "budget_s": 60.0, "command": "c"},
              "op_parity": section, "forward": {"rows": []}, "algorithm2": {"rows": []},
              "training": {"rows": []}, "notes": []}
    md = gpu_report.to_markdown(report)
    assert "op.fused_leaky_relu: built True" in md and "**pytorch (fallback)**" in md
