"""Report hook of studies/avae_glyphs.yaml: the loss-against-rotation curves and the reconstruction grids that the
generic per-seed plots cannot draw.

``report(study, report, runs_root, results_dir)`` reads what ``studies.probes_avae.RotationSweep`` wrote into each
run directory (``rotation_sweep.json``: the per-angle losses without and with the pose search;
``rotation_recon.pt``: test images rotated by 90 degrees and their reconstructions) and writes beside the report:

* ``<study>.png``: loss against test rotation, mean over the finished seeds, for the six evaluated models (the
  figure of the script this study replaced);
* ``<study>_recon_seed<k>.png``: rows input rotated by 90 degrees, VAE single, AVAE single, VAE L9, AVAE-opt L8.

It returns the per-angle table (mean over seeds) and the figure links as markdown, and puts the per-angle means
under ``report["extra"]["per_angle_mean"]``. Missing runs are skipped (a row or figure names what is missing).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# evaluated model -> (stage, curve of rotation_sweep.json)
MODELS = {
    "vae_single": ("vae_single", "identity"),
    "avae_single": ("vae_single", "search"),
    "vae_rot_l8": ("vae_rot_l8", "identity"),
    "vae_rot_l9": ("vae_rot_l9", "identity"),
    "avae_rot": ("vae_rot_l8", "search"),
    "avae_opt": ("avae_opt", "search"),
}
PAPER = {"vae_single": 684.4, "avae_single": 608.6, "avae_rot": 609.8, "avae_opt": 601.2}
STYLES = {"vae_single": "k--o", "avae_single": "k-o", "vae_rot_l8": "b--s", "vae_rot_l9": "c--^", "avae_rot": "b-s",
          "avae_opt": "r-D"}
RECON_ROWS = [("input rotated", "vae_single", "input"), ("VAE single", "vae_single", "identity"),
              ("AVAE single", "vae_single", "search"), ("VAE-rot L9", "vae_rot_l9", "identity"),
              ("AVAE-opt L8", "avae_opt", "search")]


def curves(study: Any, runs_root: Path) -> tuple[list[float] | None, dict[str, dict[int, list[float]]]]:
    """(angles, model -> seed -> per-angle losses) from the finished runs' rotation_sweep.json files."""
    angles, out = None, {}
    for model, (stage, kind) in MODELS.items():
        if stage not in study.stages:
            continue
        out[model] = {}
        for seed in study.stages[stage].seeds:
            path = runs_root / stage / f"seed{seed}" / "rotation_sweep.json"
            if not path.is_file():
                continue
            data = json.loads(path.read_text())
            if kind in data["curves"]:
                angles = angles or data["angles"]
                out[model][seed] = data["curves"][kind]
    return angles, out


def _plot(angles: list[float], means: dict[str, list[float]], n: dict[str, int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model, vals in means.items():
        ax.plot(angles, vals, STYLES.get(model, "-o"), label=f"{model} (n={n[model]})", ms=4)
    ax.set_xlabel("test rotation (degrees)")
    ax.set_ylabel("loss per image (SSE + KL), mean of seeds")
    ax.set_title("Affine VAE vs VAE on rotated glyphs (L = 8; VAE L9 = L + 1)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _recon(runs_root: Path, seed: int, path: Path) -> list[str]:
    """Writes the reconstruction grid of one seed; returns the names of the rows it could not draw."""
    import torch
    from torchvision.utils import make_grid, save_image

    rows, missing = [], []
    for name, stage, kind in RECON_ROWS:
        f = runs_root / stage / f"seed{seed}" / "rotation_recon.pt"
        if not f.is_file():
            missing.append(name)
            continue
        data = torch.load(f, weights_only=True)
        if kind not in data:
            missing.append(name)
            continue
        rows.append(data[kind])
    if rows:
        save_image(make_grid(torch.cat(rows), nrow=rows[0].shape[0], pad_value=0.5), str(path))
    return missing


def report(study: Any, report: dict[str, Any], runs_root: Path, results_dir: Path) -> str:
    runs_root, results_dir = Path(runs_root), Path(results_dir)
    angles, per_model = curves(study, runs_root)
    if angles is None:
        return "No rotation_sweep.json in the study's runs yet: no loss-against-rotation figure."
    means = {m: [sum(v[i] for v in seeds.values()) / len(seeds) for i in range(len(angles))]
             for m, seeds in per_model.items() if seeds}
    n = {m: len(seeds) for m, seeds in per_model.items() if seeds}
    report.setdefault("extra", {})["per_angle_mean"] = {"angles": angles, "mean": means, "n": n}
    figure = f"{study.name}.png"
    _plot(angles, means, n, results_dir / figure)
    lines = ["## Loss against test rotation (mean over the finished seeds)", "",
             "| model | paper (MNIST 40x40, L=8) | n | " + " | ".join(f"{a:g} deg" for a in angles) + " | mean |",
             "|---|---|---|" + "---|" * (len(angles) + 1)]
    for m in MODELS:
        if m not in means:
            lines.append(f"| {m} | {PAPER.get(m, '-')} | 0 | " + " | ".join("-" for _ in angles) + " | - |")
            continue
        vals = means[m]
        lines.append(f"| {m} | {PAPER.get(m, '-')} | {n[m]} | " + " | ".join(f"{v:.1f}" for v in vals)
                     + f" | {sum(vals) / len(vals):.2f} |")
    lines += ["", f"![loss against rotation]({figure})", ""]
    seeds = sorted({s for seeds in per_model.values() for s in seeds})
    grids = []
    for seed in seeds:
        file = f"{study.name}_recon_seed{seed}.png"
        missing = _recon(runs_root, seed, results_dir / file)
        if len(missing) < len(RECON_ROWS):
            grids.append(f"[seed {seed}]({file})" + (f" (missing rows: {', '.join(missing)})" if missing else ""))
    if grids:
        lines.append("Reconstruction grids (rows: " + ", ".join(r[0] for r in RECON_ROWS) + "; inputs rotated by "
                     "90 degrees; searched rows at the searched pose): " + ", ".join(grids) + ".")
    return "\n".join(lines) + "\n"
