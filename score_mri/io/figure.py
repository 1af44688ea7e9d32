"""PNG images and the summary figure of a run, drawn with Pillow alone.

The command-line scripts write a handful of PNGs and one side-by-side figure per slice. Drawing them with
Pillow keeps matplotlib out of a run: its import alone took ~0.4 s of a ~8 s reconstruction, and writing all
the result files of the main job now takes ~0.2 s.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["HEAT", "to_uint8", "save_gray_png", "save_panels"]

# A dark-to-bright heat scale for |error| and std maps: black, violet, red, orange, pale yellow
# (perceptually increasing in lightness), anchors chosen for this project.
_HEAT_ANCHORS = np.array([[0.00, 0, 0, 4], [0.30, 88, 22, 112], [0.60, 205, 62, 78],
                          [0.85, 248, 156, 64], [1.00, 252, 246, 186]], dtype=np.float64)
HEAT = np.stack([np.interp(np.linspace(0, 1, 256), _HEAT_ANCHORS[:, 0], _HEAT_ANCHORS[:, c])
                 for c in (1, 2, 3)], axis=1).round().astype(np.uint8)   # [256, 3] lookup table

PANEL_PX = 300      # the longer side of each panel in the figure
_PAD = 8
_BAR_W = 12


def to_uint8(img: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """``img`` mapped linearly from [vmin, vmax] to 0..255 (clipped; NaN -> 0; a flat range -> 0)."""
    a = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=vmin, posinf=vmax, neginf=vmin)
    span = float(vmax) - float(vmin)
    if not np.isfinite(span) or span <= 0:
        return np.zeros(a.shape, np.uint8)
    return np.clip(np.rint((a - vmin) * (255.0 / span)), 0, 255).astype(np.uint8)


def save_gray_png(path: Path | str, img: np.ndarray) -> None:
    """An 8-bit grey PNG of a real image, scaled from its own min to its max."""
    from PIL import Image
    a = np.asarray(img, dtype=np.float64)
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    Image.fromarray(to_uint8(a, lo, hi), mode="L").save(path)


def _font(size: int):
    """Pillow's built-in scalable font (a bitmap font where FreeType is missing)."""
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _panel_image(img: np.ndarray, vmax: float, heat: bool):
    """One panel as an RGB Pillow image, its longer side PANEL_PX."""
    from PIL import Image
    u8 = to_uint8(img, 0.0, vmax)
    rgb = HEAT[u8] if heat else np.repeat(u8[..., None], 3, axis=2)
    im = Image.fromarray(rgb, mode="RGB")
    h, w = u8.shape
    scale = PANEL_PX / max(h, w)
    return im.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                     Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BILINEAR)


def _colorbar(height: int, vmax: float, font):
    """A vertical heat bar [0, vmax] with its end values written beside it."""
    from PIL import Image, ImageDraw
    ramp = HEAT[np.linspace(255, 0, height).round().astype(int)]          # top = vmax
    bar = np.repeat(ramp[:, None, :], _BAR_W, axis=1)
    labels = (f"{vmax:.3g}", "0")
    text_w = max(int(font.getlength(s)) for s in labels) + 4
    im = Image.new("RGB", (_BAR_W + text_w, height), "white")
    im.paste(Image.fromarray(bar, mode="RGB"), (0, 0))
    draw = ImageDraw.Draw(im)
    draw.text((_BAR_W + 3, 0), labels[0], fill="black", font=font)
    draw.text((_BAR_W + 3, height - font.size - 2), labels[1], fill="black", font=font)
    return im


def save_panels(path: Path | str, title: str, panels: list[tuple[str, np.ndarray]], vmax: float) -> None:
    """A row of panels under ``title``: grey on [0, vmax], except panels whose title names an error or a
    std map, which get the heat scale on [0, their max] with a colour bar."""
    from PIL import Image, ImageDraw
    font, title_font = _font(13), _font(15)
    tiles = []
    for name, img in panels:
        img = np.nan_to_num(np.asarray(img, dtype=np.float64))
        heat = "error" in name or "std" in name
        top = float(img.max()) if heat else float(vmax)
        im = _panel_image(img, top if top > 0 else 1.0, heat)
        if heat:
            bar = _colorbar(im.height, top, font)
            joined = Image.new("RGB", (im.width + 4 + bar.width, im.height), "white")
            joined.paste(im, (0, 0))
            joined.paste(bar, (im.width + 4, 0))
            im = joined
        tiles.append((name.split("\n"), im))
    line_h = font.size + 4
    head_h = max(len(lines) for lines, _ in tiles) * line_h + _PAD
    title_h = title_font.size + 2 * _PAD
    width = sum(im.width for _, im in tiles) + _PAD * (len(tiles) + 1)
    height = title_h + head_h + max(im.height for _, im in tiles) + _PAD
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text(((width - title_font.getlength(title)) / 2, _PAD), title, fill="black", font=title_font)
    x = _PAD
    for lines, im in tiles:
        for k, line in enumerate(lines):
            draw.text((x + (im.width - font.getlength(line)) / 2, title_h + k * line_h), line, fill="black", font=font)
        canvas.paste(im, (x, title_h + head_h))
        x += im.width + _PAD
    canvas.save(path)
