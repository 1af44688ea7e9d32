#!/usr/bin/env python3
"""Mutation check: do the tests catch one-line wiring bugs in the default paths?

Each entry of :data:`MUTATIONS` names a file, an exact piece of its text, what to put there instead, and
the tests that should fail. The script copies the working tree once to a temporary folder, runs the
named tests there unmutated (they must pass), then for each mutation: applies it, runs only its tests,
restores the file, and reports caught / NOT CAUGHT / DOES NOT APPLY. A mutation whose old text is not
in the file exactly once does not apply: the code moved, so update the entry (the report says so loudly
and the exit status is 1). Not collected by pytest (no ``test_`` prefix).

    python tests/mutate.py                          # every mutation; a Markdown table on stdout
    python tests/mutate.py --only alg5-no-sense-step cli-t0-dropped
    python tests/mutate.py --list                   # the mutations and whether each still applies
    python tests/mutate.py --out mutation_report.md

Exit status: 0 when every selected mutation applies and is caught, 1 otherwise, 2 when the unmutated
tests already fail.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WIRING = "tests/test_wiring.py"
TRAINING = "tests/test_training.py"
SAMPLING = "tests/test_sampling.py"


@dataclass(frozen=True)
class Mutation:
    """Replace ``old`` (which must occur exactly once in ``file``) by ``new``; ``tests`` should then fail."""
    id: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str = ""


MUTATIONS: list[Mutation] = [
    # --- the three
    Mutation("alg5-no-sense-step", "score_mri/samplers/algorithms.py",
             "            if i % settings.m_steps != 0:\n",
             "            if True:\n",
             (f"{WIRING}::test_alg5_sense_step_matches_hand_computation_with_stretched_lambda",
              f"{WIRING}::test_alg5_differs_from_alg4_with_the_same_noise"),
             "Algorithm 5's Kaczmarz step never applied (post-step returns its input)"),
    Mutation("alg5-lambda-not-stretched", "score_mri/samplers/algorithms.py",
             "schedule.get_current_lambda(i * total / settings.N)",
             "schedule.get_current_lambda(i)",
             (f"{WIRING}::test_alg5_sense_step_matches_hand_computation_with_stretched_lambda",),
             "lambda over the schedule's own 2000 iterations instead of N"),
    Mutation("cli-t0-dropped", "score_mri/cli/flags.py",
             "t0=float(t0) if fast else None,",
             "t0=None,",
             (f"{WIRING}::test_cli_t0_and_center_fraction_reach_the_run",),
             "--t0/--fast never reach the sampler"),
    # --- training
    Mutation("dsm-t-range-shifted", "score_mri/training/losses.py",
             "* (sde.T - eps) + eps  # [B]",
             "* (sde.T - eps)  # [B]",
             (f"{TRAINING}::test_loss_draws_t_uniform_from_eps_to_1",),
             "DSM times from U(0, 1 - eps) instead of U(eps, 1)"),
    # --- samplers and operators
    Mutation("dc-skipped", "score_mri/samplers/algorithms.py",
             "return lambda x, x_mean, sl, sigma=None: data_consistency(_at(op, sl, sigma), x, x_mean, coil_slice(y, sl))",
             "return lambda x, x_mean, sl, sigma=None: (x, x_mean)",
             (f"{SAMPLING}::test_measured_kspace_preserved",),
             "complex / per-coil data consistency skipped (Algorithms 3-5)"),
    Mutation("kaczmarz-sign-flipped", "score_mri/physics/operators.py",
             "self.A_H(y - self.A(self.combine(x_coils)))",
             "self.A_H(self.A(self.combine(x_coils)) - y)",
             (f"{WIRING}::test_alg5_sense_step_matches_hand_computation_with_stretched_lambda",),
             "SENSE step climbs the residual"),
    Mutation("langevin-step-constant", "score_mri/samplers/predictors.py",
             "step_size = (self.snr * noise_norm / grad_norm) ** 2 * 2 * alpha  # [n]",
             "step_size = 2 * self.snr ** 2 * alpha * torch.ones_like(grad_norm)  # [n]",
             (f"{SAMPLING}::test_alg2_converges_to_gaussian_posterior_mean",
              f"{SAMPLING}::test_langevin_step_per_element_and_faithful_batch_mean"),
             "Langevin step size ignores the score and noise norms"),
    Mutation("ancestral-noise-dropped", "score_mri/samplers/predictors.py",
             "return x_mean + batch_expand(std, x) * z, x_mean",
             "return x_mean, x_mean",
             (f"{SAMPLING}::test_ancestral_predictor_samples_prior_in_few_steps",
              f"{WIRING}::test_cli_predictor_reaches_the_sampler"),
             "ancestral predictor injects no noise"),
    Mutation("mask-centre-ignored", "score_mri/physics/masks.py",
             "        n_samp = size // acc_factor\n        n_center = int(size * center_fraction)\n"
             "        samples = rng.normal(",
             "        n_samp = size // acc_factor\n        n_center = 0\n"
             "        samples = rng.normal(",
             (f"{WIRING}::test_cli_t0_and_center_fraction_reach_the_run", "tests/test_masks.py"),
             "gaussian1d mask without its fully sampled centre"),
    Mutation("rss-without-abs", "score_mri/utils.py",
             "torch.sum(torch.abs(x) ** 2, dim=dim)",
             "torch.sum(x ** 2, dim=dim)",
             ("tests/test_utils.py",),
             "root-sum-of-squares of complex values squared (the original's defect)"),
    Mutation("output-rss-without-abs", "score_mri/recon.py",
             "return root_sum_of_squares(x)[0].numpy()",
             "return torch.sqrt(torch.sum(x ** 2, dim=1)).real[0].numpy()",
             ("tests/test_cli.py::test_script_end_to_end",),
             "the saved multi-coil image squares complex values"),
    Mutation("flip-not-undone", "score_mri/samplers/pc_loop.py",
             "return torch.flip(score, dims) if dims else score",
             "return score",
             ("tests/test_flip_cycle.py",),
             "flip cycling returns the score of the mirrored image without mirroring it back"),
    # --- command line: flags that must reach the sampler
    Mutation("cli-predictor-ignored", "score_mri/cli/flags.py",
             'flags = {k: getattr(args, k, None) for k in ("predictor", "corrector",',
             'flags = {k: getattr(args, k, None) for k in ("corrector",',
             (f"{WIRING}::test_cli_N_m_predictor_corrector_set_what_runs",
              f"{WIRING}::test_cli_predictor_reaches_the_sampler"),
             "--predictor ignored (the config's predictor runs)"),
    Mutation("cli-N-ignored", "score_mri/cli/flags.py",
             "N = args.N if args.N is not None else N_default",
             "N = N_default",
             (f"{WIRING}::test_cli_N_m_predictor_corrector_set_what_runs",),
             "--N ignored (the config's N runs)"),
    Mutation("cli-m-ignored", "score_mri/cli/flags.py",
             'm = _setting(args, config, "m", "n_steps_each", 1)',
             'm = config_sampling(config, "n_steps_each", 1)',
             (f"{WIRING}::test_cli_N_m_predictor_corrector_set_what_runs",),
             "--m ignored"),
    Mutation("cli-snr-ignored", "score_mri/cli/flags.py",
             'snr = _setting(args, config, "snr", "snr", 0.16)',
             'snr = config_sampling(config, "snr", 0.16)',
             (f"{WIRING}::test_cli_snr_sets_the_langevin_step",),
             "--snr ignored"),
]


# ----------------------------------------------------------------------------------------------------------

def shared_dir() -> str | None:
    """The reference folder the tests read ($SCORE_MRI_SHARED or <repo>/../shared), for the copy's tests."""
    env = os.environ.get("SCORE_MRI_SHARED")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared"]:
        if (candidate / "reference").is_dir():
            return str(candidate.resolve())
    return None


def copy_tree(dest: Path) -> Path:
    """Copy the working tree (without VCS data, caches and results) to ``dest``."""
    ignore = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".pytest_cache", "results", "runs",
                                    "*.egg-info", ".tmp-*")
    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)
    return dest


def occurrences(tree: Path, m: Mutation) -> int:
    """How often the mutation's old text occurs in its file (0 when the file is missing)."""
    path = tree / m.file
    return path.read_text().count(m.old) if path.is_file() else 0


def run_tests(tree: Path, tests: list[str], timeout: float) -> tuple[str, list[str], float]:
    """Run pytest on ``tests`` inside ``tree``: ('passed' | 'failed' | 'error' | 'timeout', failing ids, seconds)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    shared = shared_dir()
    if shared is not None:
        env["SCORE_MRI_SHARED"] = shared
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", "--no-header", *tests]
    tic = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", [], time.monotonic() - tic
    seconds = time.monotonic() - tic
    failing = sorted({line.split()[1] for line in proc.stdout.splitlines()
                      if re.match(r"^(FAILED|ERROR) \S", line)})
    if proc.returncode == 0:
        return "passed", [], seconds
    if proc.returncode == 1:
        return "failed", failing, seconds
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    return "error", failing or [f"pytest exit {proc.returncode}: {' / '.join(tail)}"], seconds


def table(rows: list[dict]) -> str:
    """The report as a Markdown table."""
    lines = ["| mutation | file | result | failing tests | s |", "|---|---|---|---|---|"]
    for r in rows:
        tests = "<br>".join(t.replace("tests/", "") for t in r["failing"]) or "-"
        lines.append(f"| `{r['id']}` | {r['file']} | {r['result']} | {tests} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run the selected mutations, print (and optionally write) the report."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", metavar="ID", help="run only these mutations")
    p.add_argument("--list", action="store_true", help="list the mutations and whether they apply; run nothing")
    p.add_argument("--out", type=Path, help="also write the Markdown report here")
    p.add_argument("--timeout", type=float, default=600, help="seconds per pytest run (default 600)")
    args = p.parse_args(argv)

    known = {m.id: m for m in MUTATIONS}
    unknown = [i for i in (args.only or []) if i not in known]
    if unknown:
        p.error(f"unknown mutation id(s): {', '.join(unknown)}; see --list")
    selected = [known[i] for i in args.only] if args.only else MUTATIONS

    if args.list:
        for m in selected:
            n = occurrences(REPO, m)
            state = "applies" if n == 1 else ("DOES NOT APPLY: old text not found" if n == 0
                                              else f"DOES NOT APPLY: old text found {n} times")
            print(f"{m.id:28s} {m.file:34s} {state:40s} {m.why}")
        return 0

    rows, ok = [], True
    with tempfile.TemporaryDirectory(prefix="score-mri-mutate-") as tmp:
        tree = copy_tree(Path(tmp) / "tree")
        applicable = [m for m in selected if occurrences(tree, m) == 1]
        baseline_tests = sorted({t for m in applicable for t in m.tests})
        if baseline_tests:
            print(f"baseline: {len(baseline_tests)} test targets on the unmutated copy ...", file=sys.stderr)
            state, failing, seconds = run_tests(tree, baseline_tests, args.timeout)
            if state != "passed":
                print(f"BASELINE {state.upper()} in {seconds:.0f} s (fix these first): {', '.join(failing)}",
                      file=sys.stderr)
                return 2
        for m in selected:
            n = occurrences(tree, m)
            if n != 1:
                what = "old text not found" if n == 0 else f"old text found {n} times"
                print(f"!!! {m.id}: DOES NOT APPLY ({what} in {m.file}): update its entry in tests/mutate.py",
                      file=sys.stderr)
                rows.append({"id": m.id, "file": m.file, "result": f"**DOES NOT APPLY** ({what})", "failing": [],
                             "seconds": 0.0})
                ok = False
                continue
            path = tree / m.file
            original = path.read_text()
            path.write_text(original.replace(m.old, m.new))
            try:
                state, failing, seconds = run_tests(tree, list(m.tests), args.timeout)
            finally:
                path.write_text(original)
            caught = state in ("failed", "error", "timeout")
            result = {"failed": "caught", "error": "caught (error)", "timeout": "caught (timeout)",
                      "passed": "**NOT CAUGHT**"}[state]
            ok &= caught
            print(f"{m.id}: {result} ({seconds:.0f} s) {', '.join(failing)}", file=sys.stderr)
            rows.append({"id": m.id, "file": m.file, "result": result, "failing": failing, "seconds": seconds})
    report = table(rows)
    print(report)
    caught = sum(r["result"].startswith("caught") for r in rows)
    print(f"\n{caught} of {len(rows)} mutations caught")
    if args.out is not None:
        args.out.write_text(report + f"\n\n{caught} of {len(rows)} mutations caught\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
