"""CPU-scale reproduction of the three input-hardness claims (docs/selective.md and docs/disk.md, issue 8 item 6) on
the procedural glyphs dataset (20 classes, 1x32x32, difficulty 0.5), over 5 seeds:

1. **OSP vs softmax response** (Gangrade, Kag & Saligrama AISTATS 2021): coverage at 2% selective error of the
   teacher-size net trained with OSP above that of the same net (same init and data order) trained with CE and
   thresholded on its max softmax (the CE teacher itself).
2. **Hybrid router vs entropy routing** (Kag et al. ICLR 2023): at 70% edge coverage, the accuracy of the hybrid
   (edge + cloud, learned router, paper's alternating scheme) above that of routing by edge softmax entropy,
   with the same edge and cloud models.
3. **DiSK > KD > CE** (Kag et al. ICLR 2023): student test accuracy.

Models per seed (same data and same student initialisation for every student method; comparisons paired by
seed): the teacher / cloud ``resnet10_s`` (4.2M MACs at 100 classes) trained with CE; the student / edge
``resnet10_xxxs`` (0.8M MACs) trained by CE, KD and DiSK with the same optimizer, epochs and data order.
The teacher is frozen and the data are not augmented, so its logits and features are computed once per seed.
DiSK's student gets the same number of student epochs as CE and KD, plus ``guide_warmup`` + interleaved guide
epochs (student frozen); its lambda/delta cosine schedules keep the published end points (lambda 1 -> 5,
delta 0.6 -> 0.4, x0.9 decay) with periods scaled to the run length. The hybrid uses the CE student as edge and
the teacher as cloud. Every net is trained with Adam (lr 2e-3, cosine, batch 64): the losses differ in scale (OSP
sums C per-class terms), and Adam keeps one learning rate fair to all. Router fit (edge and cloud fixed), edge adapted with the (2 - r) weights (the cloud is
**not** adapted here, to save CPU), router refit. Evaluation on the held-out test set.

Claims and margins, fixed before running (percentage points, ``benchmarks.seeds.compare``, paired 95% interval):
each claim "A > B" is met when the low end of the interval of (A - B) is above ``MARGIN`` = 0.

Usage (about 2 CPU-minutes per seed on an idle core; the seeds can run as parallel processes and be merged)::

    nohup python -m benchmarks.hardness_glyphs --out results/hardness_glyphs.json > /tmp/hardness.log 2>&1 &
    # or one process per seed, then:
    python -m benchmarks.hardness_glyphs --out results/hardness_glyphs.json --merge part_0.json ... part_4.json

Results are written after every seed (``.json``, ``.md``), so an interrupted study keeps what finished; rerunning
with the same ``--out`` skips the seeds already there.

DiSK only (``--arms disk``: the teacher, retrained from the same seed, and the DiSK student(s); ``--pair_with``
takes the CE and KD students of the run it repeats, by seed), with the published scheduled budget and the
dual-ascent option side by side (configuration C, added after configuration B, results/hardness_glyphs_c.md)::

    python -m benchmarks.hardness_glyphs --out results/hardness_glyphs_c.json --student resnet10_xxs --epochs 12 \
        --arms disk --disk_budget scheduled dual_ascent --pair_with results/hardness_glyphs_b.json

Configuration D (post hoc, results/hardness_glyphs_d.md): as C with the dual step 20 (the budget enforced) and, per
budget mode, a second DiSK student started from the seed's CE student as in the released runner (``--disk_init ce``;
``--model_ckpt`` there is the CE-trained student), next to equal-compute controls (CE continued, KD) from the same
weights::

    python -m benchmarks.hardness_glyphs --out results/hardness_glyphs_d.json --student resnet10_xxs --epochs 12 \
        --arms disk --disk_budget scheduled dual_ascent --disk_dual_lr 20 --disk_init scratch ce \
        --pair_with results/hardness_glyphs_b.json

``--arms students`` trains the teacher and the CE, KD and DiSK students only (no OSP, no hybrid); configuration
D-long (results/hardness_glyphs_d.long.md) is B's setting trained longer::

    python -m benchmarks.hardness_glyphs --out results/hardness_glyphs_d.long.json --student resnet10_xxs \
        --teacher_epochs 24 --epochs 24 --arms students --disk_budget scheduled dual_ascent --disk_dual_lr 20

Configuration F (results/hardness_glyphs_f.md) is E's setting (``--classes 34 --kd_alpha 0.5``, 24 epochs) with
the release's protocol, ``--disk_init ce --ft_epochs 72`` (DiSK fine-tunes the CE student 3x its epochs), seeds
5-9. The OSP configuration (results/hardness_glyphs_osp.md) was picked by ``--arms sr`` pilots that never train
OSP, then run with ``--arms osp --classes 20 --teacher_epochs 24``. Configuration G
(results/hardness_glyphs_osp_release.md) repeats it on seeds 5-9 with the release's OSP: ``--osp_lagrangian code
paper --osp_multiplier_lr_scale 0.01``. Each .notes.md file next to a result holds its pre-registration and exact
command.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

CLAIMS = [
    ("osp_cov@err2", "sr_cov@err2", "OSP coverage at 2% error > softmax response"),
    ("hybrid_acc@cov70", "entropy_acc@cov70", "hybrid accuracy at 70% coverage > entropy routing"),
    ("disk_acc", "kd_acc", "DiSK student > KD student"),
    ("kd_acc", "ce_acc", "KD student > CE student"),
]
# ``--osp_lagrangian code`` (configuration G, post hoc, results/hardness_glyphs_osp_release.notes.md): OSP with the
# released Lagrangian form
CLAIMS_OSP_CODE = [
    ("osp_code_cov@err2", "sr_cov@err2", "OSP (released Lagrangian) coverage at 2% error > softmax response"),
]
# the dual-ascent DiSK option (added after configuration B: post hoc, reported as such)
CLAIMS_DISK_DA = [
    ("disk_da_acc", "kd_acc", "DiSK (dual-ascent budget) student > KD student"),
    ("disk_da_acc", "ce_acc", "DiSK (dual-ascent budget) student > CE student"),
    ("disk_da_acc", "disk_acc", "DiSK dual-ascent budget > DiSK scheduled budget"),
]
# ``--disk_init ce`` (configuration D, post hoc): DiSK students start from the seed's CE student, as in the released
# runner (``--model_ckpt`` = the CE-trained student); the equal-compute controls continue the same CE weights
CLAIMS_DISK_FT = [
    ("disk_ft_acc", "kd_ft_acc", "DiSK (from the CE student) > KD (from the CE student), equal compute"),
    ("disk_da_ft_acc", "kd_ft_acc", "DiSK dual-ascent (from the CE student) > KD (from the CE student), equal compute"),
    ("kd_ft_acc", "ce_ft_acc", "KD (from the CE student) > CE continued, equal compute"),
    ("disk_ft_acc", "ce_ft_acc", "DiSK (from the CE student) > CE continued, equal compute"),
    # the published comparison (configuration F, post hoc): the released DiSK fine-tunes the CE student for
    # ``--ft_epochs`` more epochs, the KD and CE students are trained from scratch for ``--epochs``
    ("disk_ft_acc", "kd_acc", "DiSK (from the CE student, release protocol) > KD student from scratch"),
    ("disk_da_ft_acc", "kd_acc", "DiSK dual-ascent (from the CE student, release protocol) > KD student from scratch"),
]
MARGIN = 0.0


def _batches(n: int, batch_size: int, g: torch.Generator):
    perm = torch.randperm(n, generator=g)
    for i in range(0, n, batch_size):
        yield perm[i:i + batch_size]


def _sgd(params, args, steps):
    """Adam (scale-invariant: CE, KD, DiSK and OSP losses differ in scale by up to the class count) with a cosine
    schedule over ``steps`` batches."""
    opt = torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))


@torch.no_grad()
def _logits_feats(net, tap, x, bs=1000):
    net.eval()
    outs, feats = [], []
    for i in range(0, len(x), bs):
        outs.append(net(x[i:i + bs]))
        feats.append(tap.features)
    return torch.cat(outs), torch.cat(feats)


def train_ce(net, x, y, args, seed, loss_fn=None, epochs=None):
    """Plain training loop; ``loss_fn(net, idx, xb, yb)`` replaces CE."""
    epochs = epochs or args.epochs
    g = torch.Generator().manual_seed(seed)
    steps = epochs * math.ceil(len(x) / args.batch_size)
    opt, sch = _sgd(net.parameters(), args, steps)
    for _ in range(epochs):
        net.train()
        for idx in _batches(len(x), args.batch_size, g):
            loss = loss_fn(net, idx, x[idx], y[idx]) if loss_fn else F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sch.step()
    return net


def disk_budget_constraint(mode: str, total: int, dual_lr: float, batches_per_epoch: int):
    """The DiSK budget ``B <= delta(e)`` on the shared engine. delta keeps the published end points (0.6 -> 0.4,
    x0.9 decay) with its period scaled to the ``total`` epochs of the run (half of it).

    * ``scheduled`` (released CIFAR code, runner.sh ``lmbda_adaptive 5``): the penalty ``lambda(e) relu(B - delta(e))``
      with lambda a cosine 1 -> 5 over the run. A penalty with a fixed multiplier, not a constraint: nothing makes
      B reach delta.
    * ``dual_ascent``: the Lagrangian ``lambda (B - delta(e))`` with ``lambda <- max(0, lambda + lr (B -
      delta(e)))`` after every guide batch, starting from the published lambda_min 1. ``lr = dual_lr /
      batches_per_epoch``: ``dual_lr`` is the step per epoch of mean violation, as in the released code's own dual
      update (``dual_update_step``: ``lmbda_dual += rho * mean relu(B - delta)`` once per epoch, ``--rho 2``).
    """
    from modules.constraints import Constraint, CosineSchedule

    half = max(total // 2, 1)
    delta = CosineSchedule(0.6, 0.4, period=half, decay=0.9, decay_every=half)
    if mode == "scheduled":
        return Constraint("disk_budget", mode="scheduled", schedule=CosineSchedule(1.0, 5.0, period=total),
                          bound=delta)
    if mode == "dual_ascent":
        return Constraint("disk_budget", mode="dual_ascent", init=1.0, bound=delta,
                          lr=dual_lr / max(batches_per_epoch, 1))
    raise ValueError(f"unknown DiSK budget mode {mode!r}")


def train_disk(seed, args, mode, key, student, x, y, t_logits, t_feats, epochs=None) -> dict[str, Any]:
    """One DiSK student (``student()`` builds the seeded initial net) trained ``epochs`` student epochs (default
    ``args.epochs``); returns ``{key}_*`` diagnostics and the net under ``_{key}_net``. Per guide epoch: lambda,
    delta, the mean budget value B and the mean guide output."""
    from modules.disk import budget_penalty, budget_value, disk_distill_loss, topk_mask
    from nets.router import DiskGuide

    C = args.classes
    dk = student()
    guide = DiskGuide(t_feats.shape[1], C, width=64)
    epochs = epochs or args.epochs
    total = args.disk_warmup + epochs + math.ceil(epochs / args.disk_student_epochs)
    n_batches = math.ceil(len(x) / args.batch_size)
    budget = disk_budget_constraint(mode, total, args.disk_dual_lr, n_batches)
    g = torch.Generator().manual_seed(seed)
    steps = epochs * n_batches
    s_opt, s_sch = _sgd(dk.parameters(), args, steps)
    g_opt = torch.optim.Adam(guide.parameters(), lr=args.lr)
    s_done, epoch, g_sum, g_n, b_sum, b_n = 0, 0, 0.0, 0, 0.0, 0
    trace = []
    while s_done < epochs:
        phase = "guide" if epoch < args.disk_warmup or \
            (epoch - args.disk_warmup) % (args.disk_student_epochs + 1) == args.disk_student_epochs else "student"
        if mode == "scheduled":
            budget.update(epoch=epoch)
        else:
            budget.epoch.fill_(epoch)  # drives the scheduled bound; the multiplier moves after each guide batch
        dk.train(phase == "student")
        guide.train(phase == "guide")
        ep = {"epoch": epoch, "phase": phase, "lambda": float(budget.multiplier), "delta": budget.current_bound()}
        sums = {"B": 0.0, "g": 0.0, "viol": 0.0, "n": 0}
        for idx in _batches(len(x), args.batch_size, g):
            xb, yb, tl, tf = x[idx], y[idx], t_logits[idx], t_feats[idx]
            m = topk_mask(tl, yb, args.topk)
            if phase == "student":
                s = dk(xb)
                with torch.no_grad():
                    gv = guide(tf, tl)
                loss = disk_distill_loss(s, tl, gv, m, args.tau_s, args.tau_t, 0.9) + 0.1 * F.cross_entropy(s, yb)
                opt = s_opt
                b = budget_value(s.detach(), tl, yb, gv, 5.0)
                if s_done == epochs - 1:  # the guide's mean output (and B) in the last student epoch
                    g_sum, g_n = g_sum + float(gv.sum()), g_n + len(gv)
                    b_sum, b_n = b_sum + float(b), b_n + 1
            else:
                with torch.no_grad():
                    s = dk(xb)
                gv = guide(tf, tl)
                b = budget_value(s, tl, yb, gv, 5.0)
                loss = disk_distill_loss(s, tl, gv, m, args.tau_s, args.tau_t, 0.9) + budget_penalty(
                    budget, b, gv, args.topk, 0.9)
                opt = g_opt
            opt.zero_grad()
            loss.backward()
            opt.step()
            if phase == "student":
                s_sch.step()
            elif mode == "dual_ascent":
                budget.update(value=b.detach())
            sums["B"] += float(b.detach())
            sums["g"] += float(gv.detach().mean())
            sums["viol"] += float(b.detach() > ep["delta"])
            sums["n"] += 1
        n = max(sums.pop("n"), 1)
        ep.update({k: v / n for k, v in sums.items()}, lambda_end=float(budget.multiplier))
        trace.append(ep)
        s_done += phase == "student"
        epoch += 1
    guide_eps = [e for e in trace if e["phase"] == "guide"]
    return {f"_{key}_net": dk, f"{key}_guide_mean": g_sum / max(g_n, 1), f"{key}_B_last": b_sum / max(b_n, 1),
            f"{key}_delta_last": guide_eps[-1]["delta"], f"{key}_lambda_last": guide_eps[-1]["lambda_end"],
            f"{key}_trace": trace}


def _coverage_at_2pct(logits, yt) -> float:
    """Coverage (%) at 2% selective error when abstaining on the max softmax (softmax response's and OSP's score)."""
    from modules.selective_metrics import coverage_at_error

    p = logits.softmax(1)
    return coverage_at_error(p.max(1).values, p.argmax(1) == yt, 0.02).coverage * 100


def train_osp(seed: int, args: argparse.Namespace, form: str, x, y, xt, yt) -> dict[str, Any]:
    """OSP on the teacher's net, init and data order (learned per-class multipliers through the constraint engine),
    Lagrangian ``form`` (``paper`` or the released ``code``); keys ``osp_*`` (paper) or ``osp_code_*``. The
    multipliers step at ``osp_multiplier_lr_scale`` x the net's lr (the release: its own AdamW at 1e-4 against
    1e-2 for the net, a scale of 0.01)."""
    from modules.constraints import Constraint
    from modules.selective_classifier import osp_loss
    from nets import create_net
    from nets.router import FeatureTap

    C = args.classes
    torch.manual_seed(seed + 1000)
    osp = create_net(args.teacher, num_classes=C, in_channels=1)
    osp_tap = FeatureTap(osp)
    aux = torch.nn.Linear(osp_tap.dim, C)
    eps = torch.nn.Parameter(torch.full((C,), 0.5))
    mult = Constraint("osp_error", mode="learned", shape=(C,), init=args.mu - 0.5, hinge=False)
    g = torch.Generator().manual_seed(seed + 1000)
    steps = args.teacher_epochs * math.ceil(len(x) / args.batch_size)
    opt = torch.optim.Adam([{"params": list(osp.parameters()) + list(aux.parameters())},
                            {"params": [eps], "weight_decay": 0.0},
                            {"params": [mult.lam], "weight_decay": 0.0,
                             "lr": args.lr * args.osp_multiplier_lr_scale}],
                           lr=args.lr, weight_decay=args.weight_decay)
    sch = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(args.teacher_epochs):
        osp.train()
        for idx in _batches(len(x), args.batch_size, g):
            out = osp(x[idx])
            loss = 0.9 * osp_loss(out, y[idx], mult, eps, args.mu, form) + 0.1 * F.cross_entropy(
                aux(osp_tap.features), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sch.step()
    logits, _ = _logits_feats(osp, osp_tap, xt)
    key = "osp" if form == "paper" else "osp_code"
    return {f"{key}_acc": float((logits.argmax(1) == yt).float().mean() * 100),
            f"{key}_cov@err2": _coverage_at_2pct(logits, yt),
            f"{key}_lambda_mean": float(mult.multiplier.detach().mean()),
            f"{key}_eps_mean": float(F.relu(eps.detach()).mean())}


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from datamodules.glyphs import GlyphsDataModule
    from modules.constraints import Constraint
    from modules.disk import kd_loss
    from modules.hybrid_router import entropy, hybrid_accuracy, proxy_labels, route, router_loss
    from nets import create_net
    from nets.router import FeatureTap, HybridRouter

    t0 = time.perf_counter()
    dm = GlyphsDataModule(num_classes=args.classes, difficulty=args.difficulty, train_size=args.train_size,
                          test_size=args.test_size, seed=seed, cache_dir=args.cache_dir)
    dm.setup("fit")
    x, y, xt, yt = dm.train_images, dm.train_labels, dm.test_images, dm.test_labels
    C = args.classes
    res: dict[str, Any] = {"seed": seed}

    def finish() -> dict[str, Any]:  # every arm ends here: the seed's wall time joins its results
        res["seconds"] = time.perf_counter() - t0
        return res

    def student():
        torch.manual_seed(seed)
        return create_net(args.student, num_classes=C, in_channels=1)

    def acc(net):
        logits, _ = _logits_feats(net, FeatureTap(net), xt)
        return logits, float((logits.argmax(1) == yt).float().mean() * 100)

    # teacher / cloud
    torch.manual_seed(seed + 1000)
    teacher = create_net(args.teacher, num_classes=C, in_channels=1)
    train_ce(teacher, x, y, args, seed + 1000, epochs=args.teacher_epochs)
    t_tap = FeatureTap(teacher)
    t_logits, t_feats = _logits_feats(teacher, t_tap, x)
    tt_logits, _ = _logits_feats(teacher, t_tap, xt)
    res["teacher_acc"] = float((tt_logits.argmax(1) == yt).float().mean() * 100)

    if args.arms in ("all", "students", "kd") or "ce" in args.disk_init:
        # CE student (also the softmax-response model and the edge model; with --disk_init ce, the DiSK init)
        ce = train_ce(student(), x, y, args, seed)
        ce_logits, res["ce_acc"] = acc(ce)
    def kd_fn(net, idx, xb, yb):  # the KD students' loss against the teacher's logits
        return kd_loss(net(xb), t_logits[idx], yb, args.kd_tau, args.kd_alpha)

    if args.arms in ("all", "students", "kd"):
        # KD student
        kd = train_ce(student(), x, y, args, seed, loss_fn=kd_fn)
        _, res["kd_acc"] = acc(kd)

    # DiSK student(s): guide warm-up, then (student_epochs student, 1 guide) cycles; student epochs = args.epochs
    # (from scratch) or ft_epochs (from the CE student).
    # One DiSK student per budget mode (same init, data order and guide init): ``scheduled`` is the released
    # lambda/delta cosine pair; ``dual_ascent`` enforces B <= delta(e) with projected dual ascent on the shared
    # engine (an option added after configuration B, see the module doc).
    inits = {"scratch": ("", student, args.epochs)}
    if "ce" in args.disk_init:
        # released protocol (runner.sh ``--model_ckpt $base_ckpt``, the CE-trained student): DiSK students keyed
        # ``*_ft`` start from this seed's CE student; the equal-compute controls get the same ``ft_epochs`` more
        # epochs (default args.epochs; the release trains 3x its CE epochs) from the same weights, with a fresh
        # optimizer and cosine as the DiSK student (CE continued; KD)
        ce_state = {k: v.clone() for k, v in ce.state_dict().items()}

        def from_ce():
            net = student()
            net.load_state_dict(ce_state)
            return net

        ft = args.ft_epochs or args.epochs
        inits["ce"] = ("_ft", from_ce, ft)
        _, res["ce_ft_acc"] = acc(train_ce(from_ce(), x, y, args, seed, epochs=ft))
        _, res["kd_ft_acc"] = acc(train_ce(from_ce(), x, y, args, seed, loss_fn=kd_fn, epochs=ft))
    for init in args.disk_init if args.arms in ("all", "students", "disk") else ():
        suffix, disk_student, epochs = inits[init]
        for mode in args.disk_budget:
            key = ("disk" if mode == "scheduled" else "disk_da") + suffix
            res.update(train_disk(seed, args, mode, key, disk_student, x, y, t_logits, t_feats, epochs=epochs))
            _, res[f"{key}_acc"] = acc(res.pop(f"_{key}_net"))
    if args.arms not in ("all", "sr", "osp"):
        return finish()

    # OSP (train_osp, one net per --osp_lagrangian form); softmax response is the CE-trained teacher itself
    res["sr_cov@err2"] = _coverage_at_2pct(tt_logits, yt)
    if args.arms == "sr":
        return finish()
    for form in args.osp_lagrangian:
        res.update(train_osp(seed, args, form, x, y, xt, yt))
    if args.arms == "osp":
        return finish()

    # Hybrid: edge = CE student, cloud = teacher; router fit, edge adapted with (2 - r), router refit
    edge = ce
    e_tap = FeatureTap(edge)
    cov_c = Constraint("coverage", mode="fixed", init=1.0, bound=0.7, direction="ge")

    def fit_router():
        e_logits, e_feats = _logits_feats(edge, e_tap, x)
        _, keep = proxy_labels(e_logits, t_logits, y)
        torch.manual_seed(seed + 7)
        router = HybridRouter(e_feats.shape[1], topk=10, hidden=(128, 32), num_classes=C)
        ropt = torch.optim.Adam(router.parameters(), lr=1e-3, weight_decay=5e-4)
        gr = torch.Generator().manual_seed(seed)
        for _ in range(args.router_epochs):
            router.train()
            for idx in _batches(len(x), args.batch_size, gr):
                bce, pen = router_loss(router(e_logits[idx], e_feats[idx]), keep[idx], cov_c)
                ropt.zero_grad()
                (bce + pen).backward()
                ropt.step()
        return router.eval()

    router = fit_router()

    def adapt(net, idx, xb, yb):
        out = net(xb)
        with torch.no_grad():
            router.eval()
            send = 1 - torch.sigmoid(router(out.detach(), e_tap.features.detach()))
        return ((2 - send) * F.cross_entropy(out, yb, reduction="none")).mean()

    args_adapt = argparse.Namespace(**{**vars(args), "lr": args.lr * 0.1})  # fine-tuning the trained edge
    train_ce(edge, x, y, args_adapt, seed + 3, loss_fn=adapt, epochs=args.adapt_epochs)
    router = fit_router()
    with torch.no_grad():
        e_logits, e_feats = _logits_feats(edge, e_tap, xt)
        keep_score = router(e_logits, e_feats)
    e_ok, c_ok = e_logits.argmax(1) == yt, tt_logits.argmax(1) == yt
    res["edge_acc"] = float(e_ok.float().mean() * 100)
    for c in (0.9, 0.7, 0.5):
        k = f"{c * 100:g}"
        res[f"hybrid_acc@cov{k}"] = hybrid_accuracy(e_ok, c_ok, route(keep_score, c)) * 100
        res[f"entropy_acc@cov{k}"] = hybrid_accuracy(e_ok, c_ok, route(-entropy(e_logits), c)) * 100
    return finish()


def pair_with(runs: list[dict[str, Any]], path: str | Path) -> None:
    """Add another run's per-seed values (same seeds) for the keys this run lacks, suffixed ``_b`` when the key
    exists here too: a ``--arms disk`` rerun is compared with the CE and KD students of the run it repeats."""
    other = {r["seed"]: r for r in json.loads(Path(path).read_text())["runs"]}
    for r in runs:
        o = other[r["seed"]]
        for k in ("ce_acc", "kd_acc", "teacher_acc", "disk_acc", "disk_guide_mean"):
            if k in o:
                r[k if k not in r else f"{k}_b"] = o[k]


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    from benchmarks.seeds import compare, mean_ci

    keys = [k for k in runs[0] if k != "seed" and isinstance(runs[0][k], (int, float))]
    out: dict[str, Any] = {"n_seeds": len(runs)}
    if len(runs) >= 2:
        out["intervals"] = {k: vars(mean_ci([r[k] for r in runs])) for k in keys}
    claims = []
    for a, b, text in CLAIMS + CLAIMS_OSP_CODE + CLAIMS_DISK_DA + CLAIMS_DISK_FT:
        if a not in runs[0] or b not in runs[0]:
            continue
        entry = {"claim": text, "a": a, "b": b, "margin": MARGIN}
        if len(runs) >= 5:
            c = compare([r[a] for r in runs], [r[b] for r in runs], margin=MARGIN, names=(a, b))
            entry.update(diff=c.diff, low=c.low, high=c.high, met=c.margin_met, text=str(c))
        claims.append(entry)
    out["claims"] = claims
    return out


def write_markdown(path: Path, data: dict[str, Any]) -> None:
    s = data["summary"]
    lines = [f"# Input hardness on glyphs ({s['n_seeds']} seeds)", "", f"Command: `{data['command']}`", "",
             f"Machine: {data['machine']}", "", "| quantity | mean | 95% interval |", "|---|---|---|"]
    for k, iv in s.get("intervals", {}).items():
        lines.append(f"| {k} | {iv['mean']:.2f} | [{iv['low']:.2f}, {iv['high']:.2f}] |")
    lines += ["", f"Claims (paired 95% interval of A - B; met when low > {MARGIN}, margin fixed in advance):", ""]
    for c in s["claims"]:
        verdict = ("**met**" if c["met"] else "**not met**") if "met" in c else "(fewer than 5 seeds)"
        lines.append(f"* {c['claim']}: {c.get('text', '')} {verdict}")
    if data.get("notes"):
        lines += ["", "Notes:", "", data["notes"]]
    lines += ["", "Per-seed values are in the JSON file next to this one.", ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results/hardness_glyphs.json")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--difficulty", type=float, default=0.5)
    ap.add_argument("--train_size", type=int, default=2000)
    ap.add_argument("--test_size", type=int, default=3000)
    ap.add_argument("--student", default="resnet10_xxxs")
    ap.add_argument("--teacher", default="resnet10_s")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--teacher_epochs", type=int, default=8)
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight_decay", type=float, default=0.0)
    ap.add_argument("--kd_tau", type=float, default=4.0)
    ap.add_argument("--kd_alpha", type=float, default=0.9)
    ap.add_argument("--topk", type=int, default=5)
    ap.add_argument("--tau_s", type=float, default=3.5)
    ap.add_argument("--tau_t", type=float, default=4.0)
    ap.add_argument("--disk_warmup", type=int, default=1)
    ap.add_argument("--disk_student_epochs", type=int, default=3)
    ap.add_argument("--disk_budget", nargs="+", default=["scheduled"], choices=["scheduled", "dual_ascent"],
                    help="DiSK budget handling, one DiSK student per mode (see disk_budget_constraint)")
    ap.add_argument("--disk_dual_lr", type=float, default=2.0,
                    help="dual_ascent: multiplier step per epoch of mean violation (released code's --rho 2)")
    ap.add_argument("--disk_init", nargs="+", default=["scratch"], choices=["scratch", "ce"],
                    help="DiSK student init, one set of DiSK students per value: scratch (the shared seeded init; "
                         "keys disk*) or ce (this seed's CE student, the released runner's --model_ckpt; keys "
                         "disk*_ft, plus the equal-compute controls ce_ft_acc and kd_ft_acc from the same weights)")
    ap.add_argument("--ft_epochs", type=int, default=None,
                    help="with --disk_init ce: epochs of every student started from the CE student (the DiSK *_ft "
                         "students and the ce_ft / kd_ft controls); default --epochs. The released runner trains "
                         "DiSK 3x its CE epochs (600 on top of 200)")
    ap.add_argument("--arms", default="all", choices=["all", "students", "disk", "kd", "sr", "osp"],
                    help="disk: train only the teacher and the DiSK student(s) (same seeds, same teacher); "
                         "students: the teacher and the CE, KD and DiSK students (no OSP, no hybrid); kd: the "
                         "teacher and the CE and KD students only (pilots that choose a setting where KD > CE "
                         "without seeing DiSK); sr: the teacher and its softmax-response coverage only (pilots that "
                         "choose a setting for OSP without seeing OSP); osp: the teacher, softmax response and OSP")
    ap.add_argument("--pair_with", default=None,
                    help="a results JSON of the same seeds whose ce/kd (and other missing) values join each seed")
    ap.add_argument("--mu", type=float, default=1.67)
    ap.add_argument("--osp_lagrangian", nargs="+", default=["paper"], choices=["paper", "code"],
                    help="OSP Lagrangian form, one OSP net per value: paper (keys osp_*) or the released code's "
                         "(keys osp_code_*; the multiplier does not scale the error term, docs/selective.md#osp-one-sided-prediction)")
    ap.add_argument("--osp_multiplier_lr_scale", type=float, default=1.0,
                    help="the OSP multipliers' learning rate as a multiple of --lr (the release: 1e-4 / 1e-2 = 0.01)")
    ap.add_argument("--router_epochs", type=int, default=8)
    ap.add_argument("--adapt_epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache_dir", default=None)
    ap.add_argument("--merge", nargs="+", default=None, help="JSON files of partial runs to merge into --out")
    ap.add_argument("--notes", default=None, help="a text file whose content is added to the report")
    args = ap.parse_args(argv)
    if args.merge:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        runs = sorted((r for part in parts for r in part["runs"]), key=lambda r: r["seed"])
        tokens, keep = shlex.split(parts[0]["command"]), []
        skip = {"--out", "--seeds", "--cache_dir"}
        i = 0
        while i < len(tokens):  # drop the per-part output, seeds and cache: the merged run is all seeds
            if tokens[i] in skip:
                i += 1
                while i < len(tokens) and not tokens[i].startswith("--"):
                    i += 1
                continue
            keep.append(tokens[i])
            i += 1
        data = {**parts[0], "runs": runs, "summary": summarise(runs),
                "command": " ".join(keep) + " (one process per seed, merged with --merge)"}
        if args.notes:
            data["notes"] = Path(args.notes).read_text().strip()
        Path(args.out).write_text(json.dumps(data, indent=1))
        write_markdown(Path(args.out).with_suffix(".md"), data)
        return data
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    if out.exists():
        old = json.loads(out.read_text())
        unrun = ("out", "seeds", "threads", "notes")
        if old.get("settings") == {k: v for k, v in vars(args).items() if k not in unrun}:
            runs = old["runs"]
    done = {r["seed"] for r in runs}
    command = "python -m benchmarks.hardness_glyphs " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))

    def write() -> dict[str, Any]:  # after every seed, and once more at the end (a rerun refreshes the notes)
        data = {"command": command, "machine": f"cpu2 (2 shared cores), {platform.processor() or platform.machine()}",
                "settings": {k: v for k, v in vars(args).items() if k not in ("out", "seeds", "threads", "notes")},
                "runs": runs, "summary": summarise(runs)}
        if args.notes:
            data["notes"] = Path(args.notes).read_text().strip()
        out.write_text(json.dumps(data, indent=1))
        write_markdown(out.with_suffix(".md"), data)
        return data

    for seed in args.seeds:
        if seed in done:
            continue
        runs.append(run_seed(seed, args))
        if args.pair_with:
            pair_with(runs[-1:], args.pair_with)
        print(json.dumps({k: v for k, v in runs[-1].items() if not k.endswith("_trace")}), flush=True)
        write()
    return write() if runs else {}


if __name__ == "__main__":
    main()
