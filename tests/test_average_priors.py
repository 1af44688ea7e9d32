"""scripts/average_priors.py: the weighted average of two priors' weights, in the released checkpoint layout."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "ve" / "colin27_ncsnpp_small.py"


def _script():
    """The script as a module."""
    spec = importlib.util.spec_from_file_location("average_priors", REPO / "scripts" / "average_priors.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_average_state_is_the_weighted_mean_and_refuses_mismatches() -> None:
    """w = 0 and 1 give the inputs, 0.25 the linear mix; integer tensors must agree; keys and shapes must match."""
    avg = _script().average_state
    a = {"w": torch.tensor([0.0, 4.0]), "n": torch.tensor([3])}
    b = {"w": torch.tensor([8.0, 0.0]), "n": torch.tensor([3])}
    assert torch.equal(avg(a, b, 0.0)["w"], a["w"]) and torch.equal(avg(a, b, 1.0)["w"], b["w"])
    assert torch.equal(avg(a, b, 0.25)["w"], torch.tensor([2.0, 3.0])) and torch.equal(avg(a, b, 0.25)["n"], a["n"])
    with pytest.raises(ValueError, match="keys"):
        avg(a, {"w": b["w"]}, 0.5)
    with pytest.raises(ValueError, match="shapes"):
        avg(a, {"w": torch.zeros(3), "n": b["n"]}, 0.5)
    with pytest.raises(ValueError, match="integer"):
        avg(a, {"w": b["w"], "n": torch.tensor([4])}, 0.5)


def test_average_priors_writes_a_loadable_checkpoint(tmp_path: Path) -> None:
    """Two random priors -> (1 - w) A + w B, loadable by the model's checkpoint loader."""
    mod = _script()
    from models import utils as mutils
    from models.checkpoint import load_model_weights, save_checkpoint
    from score_mri.cli.flags import load_config

    config = load_config(CONFIG)
    paths = []
    with torch.random.fork_rng(devices=[]):
        for seed in (0, 1):
            torch.manual_seed(seed)
            model = mutils.create_model(config)
            paths.append(tmp_path / f"p{seed}.pth")
            save_checkpoint(paths[-1], {"model": model, "step": 7})
    out = mod.main([str(paths[0]), str(paths[1]), "--weight", "0.25", "--out", str(tmp_path / "soup.pth")])
    a, b = (mod.load_weights(config, p).state_dict() for p in paths)
    soup = mutils.create_model(config)
    load_model_weights(out, soup, device="cpu")
    for key, value in soup.state_dict().items():
        expected = 0.75 * a[key] + 0.25 * b[key] if value.is_floating_point() else a[key]
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7, msg=key)


def test_average_priors_refuses_another_architecture_in_one_line(tmp_path: Path, capsys) -> None:
    """A prior of another network: exit status 2 and a one-line message, no traceback."""
    mod = _script()
    bogus = tmp_path / "bogus.pth"
    torch.save({"model": {"not_a_key": torch.zeros(1)}, "step": 0}, bogus)
    with pytest.raises(SystemExit) as exc:
        mod.main([str(bogus), str(bogus), "--out", str(tmp_path / "o.pth")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("average_priors.py: error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.pth").exists()
