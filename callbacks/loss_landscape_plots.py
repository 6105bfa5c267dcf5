"""Plots of the LossLandscape callback (matplotlib, Agg backend): 1-D curves, contour, filled contour, 3-D
surface, PCA trajectory and Hessian eigenvalue-ratio map. Each function writes PNG file(s) and returns nothing
or the written paths. Conventions follow the reference plots (Li et al. 2018; docs/loss_landscape.md#grids-evaluation-and-training): contour levels
``vmin:vmax:step`` (0.1, 10, 0.5), the 3-D surface clipped at ``zmax`` (5), the ratio map on [0, 0.5].
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _levels(loss: np.ndarray, levels: tuple[float, float, float]) -> np.ndarray:
    vmin, vmax, step = levels
    lv = np.arange(vmin, vmax + 1e-12, step)
    finite = loss[np.isfinite(loss)]
    if finite.size and (lv.size < 2 or finite.min() > lv[-2] or finite.max() < lv[1]):
        lv = np.linspace(finite.min(), finite.max(), 20)  # the fixed levels would miss this surface
    return lv


def plot_curve(path: str | Path, x: np.ndarray, loss: np.ndarray, acc: np.ndarray, xlabel: str = "alpha",
               title: str = "", marks: dict[float, str] | None = None) -> None:
    """Loss (left axis, blue) and accuracy in percent (right axis, red) along a 1-D line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, loss, "b-", lw=1.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss", color="b")
    ax.tick_params(axis="y", labelcolor="b")
    ax2 = ax.twinx()
    ax2.plot(x, acc, "r--", lw=1.2)
    ax2.set_ylabel("accuracy (%)", color="r")
    ax2.set_ylim(0, 100)
    ax2.tick_params(axis="y", labelcolor="r")
    for pos, label in (marks or {}).items():
        ax.axvline(pos, color="grey", lw=0.8, ls=":")
        ax.annotate(label, (pos, ax.get_ylim()[1]), fontsize=8, ha="center", va="bottom")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_surface_2d(prefix: str | Path, x: np.ndarray, y: np.ndarray, loss: np.ndarray,
                    levels: tuple[float, float, float] = (0.1, 10.0, 0.5), zmax: float = 5.0, title: str = ""
                    ) -> list[tuple[str, Path]]:
    """``<prefix>_contour.png``, ``_contourf.png`` and ``_3d.png`` of ``loss[j, i] = f(x[i], y[j])``."""
    plt = _plt()
    prefix = Path(prefix)
    gx, gy = np.meshgrid(x, y)
    lv = _levels(loss, levels)
    z = np.where(np.isfinite(loss), loss, np.nan)
    written = []

    fig, ax = plt.subplots(figsize=(5, 5))
    cs = ax.contour(gx, gy, z, levels=lv, cmap="summer")
    ax.clabel(cs, inline=True, fontsize=7)
    ax.plot([0], [0], "k+", ms=8)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = prefix.with_name(prefix.name + "_contour.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append((prefix.name + "_contour", path))

    fig, ax = plt.subplots(figsize=(5.8, 5))
    cf = ax.contourf(gx, gy, z, levels=lv, cmap="summer", extend="both")
    fig.colorbar(cf, ax=ax, label="loss")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = prefix.with_name(prefix.name + "_contourf.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append((prefix.name + "_contourf", path))

    fig = plt.figure(figsize=(6, 5))
    ax = fig.add_subplot(111, projection="3d")
    ax.plot_surface(gx, gy, np.minimum(np.nan_to_num(z, nan=zmax), zmax), cmap="coolwarm", linewidth=0,
                    antialiased=True)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_zlabel("loss")
    ax.set_zlim(0, zmax)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = prefix.with_name(prefix.name + "_3d.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append((prefix.name + "_3d", path))
    return written


def plot_trajectory(path: str | Path, px: np.ndarray, py: np.ndarray, ratios: Sequence[float], x: np.ndarray,
                    y: np.ndarray, loss: np.ndarray, epochs: Sequence[int] = (), lr_changes: Sequence[int] = (),
                    levels: tuple[float, float, float] = (0.1, 10.0, 0.5)) -> None:
    """The optimisation path projected on the two PCA directions, over the loss contours along them."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    gx, gy = np.meshgrid(x, y)
    cs = ax.contour(gx, gy, loss, levels=_levels(loss, levels), cmap="summer")
    ax.clabel(cs, inline=True, fontsize=7)
    ax.plot(px, py, "r-o", ms=3, lw=1)
    ax.plot(px[:1], py[:1], "ks", ms=5, label="start")
    ax.plot([0], [0], "k*", ms=9, label="final")
    if len(lr_changes):
        idx = list(lr_changes)
        at = ", ".join(str(epochs[i]) for i in idx) if len(epochs) > max(idx) else ""
        ax.plot(px[idx], py[idx], "bD", ms=6, label=f"lr decay (epoch {at})" if at else "lr decay")
    ax.set_xlabel(f"1st PC: {100 * ratios[0]:.1f}% of variance")
    ax.set_ylabel(f"2nd PC: {100 * ratios[1]:.1f}% of variance")
    ax.legend(fontsize=7, loc="best")
    ax.set_title("optimisation path (PCA of the checkpoints)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_eig_ratio(path: str | Path, x: np.ndarray, y: np.ndarray | None, ratio: np.ndarray) -> None:
    """|lambda_min / lambda_max| as a heat map (2-D) or a curve (1-D), colour range [0, 0.5]."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.8, 5) if y is not None else (6, 4))
    if y is None:
        ax.plot(x, ratio, "k-o", ms=3)
        ax.set_ylim(0, max(0.5, float(np.nanmax(ratio)) if np.isfinite(ratio).any() else 0.5))
        ax.set_xlabel("alpha")
        ax.set_ylabel("|lambda_min / lambda_max|")
    else:
        im = ax.pcolormesh(x, y, ratio, vmin=0.0, vmax=0.5, cmap="viridis", shading="nearest")
        fig.colorbar(im, ax=ax, label="|lambda_min / lambda_max|")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    ax.set_title("Hessian eigenvalue ratio", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
