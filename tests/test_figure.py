"""The Pillow-drawn PNGs and summary figure of the command-line scripts."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from score_mri.io import figure

REPO = Path(__file__).resolve().parents[1]


def test_to_uint8_maps_the_range_end_to_end_and_clips():
    a = np.array([[-1.0, 0.0, 0.5], [1.0, 2.0, np.nan]])
    u = figure.to_uint8(a, 0.0, 1.0)
    assert u.dtype == np.uint8
    assert u.tolist() == [[0, 0, 128], [255, 255, 0]]
    assert not figure.to_uint8(a, 1.0, 1.0).any()          # a flat range is black, not a division by zero


def test_heat_scale_gets_lighter_from_black_to_pale():
    lightness = figure.HEAT.astype(float) @ np.array([0.299, 0.587, 0.114])
    assert figure.HEAT.shape == (256, 3)
    assert np.all(np.diff(lightness) >= -1e-9)
    assert lightness[0] < 5 and lightness[-1] > 230


def test_gray_png_keeps_the_order_of_the_pixel_values(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.random((17, 23)) * 1e-5 + 3.0               # tiny range in large units
    figure.save_gray_png(tmp_path / "a.png", img)
    back = np.asarray(Image.open(tmp_path / "a.png"))
    assert back.shape == img.shape and back.min() == 0 and back.max() == 255
    order = np.argsort(img, axis=None)
    assert np.all(np.diff(back.ravel()[order].astype(int)) >= 0)


def test_panels_are_laid_out_side_by_side_with_the_heat_scale_on_error_maps(tmp_path):
    img = np.outer(np.linspace(0, 1, 40), np.ones(60))
    panels = [("recon\n40.00 dB / SSIM 0.900", img), ("label", img), ("|error|", np.abs(img - 0.5))]
    figure.save_panels(tmp_path / "f.png", "a title", panels, vmax=1.0)
    fig = np.asarray(Image.open(tmp_path / "f.png").convert("RGB"))
    two = tmp_path / "g.png"
    figure.save_panels(two, "a title", panels[:2], vmax=1.0)
    assert fig.shape[1] > np.asarray(Image.open(two)).shape[1] + figure.PANEL_PX      # third panel and its bar
    heat_cols = fig[:, -figure.PANEL_PX // 2:, :].reshape(-1, 3)
    grey = (heat_cols[:, 0] == heat_cols[:, 1]) & (heat_cols[:, 1] == heat_cols[:, 2])
    assert (~grey).sum() > 100                          # the error map is in colour, the images are grey
    left = fig[:, : figure.PANEL_PX, :].reshape(-1, 3)
    assert np.all(left[:, 0] == left[:, 1])


def test_a_run_writes_its_results_without_importing_matplotlib(tmp_path):
    code = f"""
import sys, numpy as np
from pathlib import Path
from score_mri.io import outputs
img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
record = {{"recon": {{"psnr": 30.0, "ssim": 0.9}}, "zero_filled": {{"psnr": 20.0, "ssim": 0.5}}}}
outputs.save_results(Path({str(tmp_path)!r}), "s", dict(input=img, label=img, recon=img, mask=img, std=img),
                     {{0: img}}, {{}}, record, "title")
print("matplotlib" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO), check=True)
    assert out.stdout.strip() == "False"
    files = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert {"s_figure.png", "recon/s.png", "recon/s_std.png", "recon_progress/s_0000.png"} <= files
    assert json.loads((tmp_path / "s_metrics.json").read_text())["recon"]["psnr"] == pytest.approx(30.0)
