"""Quantizer speed and memory: our ``vq`` against vector-quantize-pytorch's ``VectorQuantize``.

For each cell (tokens N, dimension D, codebook size K) it times one training step, forward and
backward of ``sum(z_q * g) + loss`` on tokens ``(1, N, D)``, and measures the peak extra memory
of that step:

* CUDA: ``torch.cuda.max_memory_allocated`` above what inputs and modules already hold; timed
  with CUDA events, median of the repeats.
* CPU: each cell runs in a fresh subprocess; peak RSS (``ru_maxrss``) above the RSS once inputs
  and modules exist; median wall time of the repeats (one repeat when a step takes over 5 s).

Settings matched between the two libraries: EMA (decay 0.99, commitment 0.25, random init, no
dead-code restart) and loss-trained codebooks (``update="loss"`` vs
``learnable_codebook=True, ema_update=False``). Cells where vector-quantize-pytorch is
predicted to run out of memory (it materialises several ``N x K`` float32 matrices: about
``6 * N * K * 4`` bytes, which matches its measured 24.6 GiB at N=65,536, K=16,384) are skipped
and marked ``skip (pred. OOM)``.

Usage::

    python bench/quantizers.py                      # CPU grid + CUDA grid if a GPU is present
    python bench/quantizers.py --device cpu --quick # a smoke-sized CPU grid (the demo)
    python bench/quantizers.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

IMPLS = ("ours-ema", "vqp-ema", "ours-loss", "vqp-loss")
GiB = 2**30


@dataclass(frozen=True)
class Cell:
    device: str
    n: int
    d: int
    k: int


@dataclass
class Result:
    cell: Cell
    impl: str
    status: str = "ok"
    time_ms: float | None = None
    peak_extra_mib: float | None = None
    times_ms: list[float] = field(default_factory=list)


def grid(device: str, quick: bool) -> list[Cell]:
    if quick:
        return [Cell(device, 4096, d, k) for d in (8, 32) for k in (1024, 4096)]
    if device == "cuda":
        return [
            Cell(device, n, d, k)
            for n in (16384, 65536)
            for d in (8, 32, 256)
            for k in (1024, 16384, 65536, 262144)
        ]
    # CPU: two cores make the D=256 / large-K cells slow; keep the full D sweep at moderate K and
    # the memory-target cells (K = 65,536 at N = 65,536; K = 262,144) at D = 8.
    cells = [Cell(device, 16384, d, k) for d in (8, 32, 256) for k in (1024, 16384)]
    cells += [Cell(device, 65536, 8, 65536), Cell(device, 16384, 8, 262144)]
    return cells


def vqp_predicted_bytes(cell: Cell) -> int:
    return 6 * cell.n * cell.k * 4


def memory_budget(device: str) -> int:
    if device == "cuda":
        return int(torch.cuda.get_device_properties(0).total_memory * 0.9)
    with open("/proc/meminfo") as f:
        total_kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return int(total_kib * 1024 * 0.6)


def build(impl: str, cell: Cell) -> torch.nn.Module:
    if impl.startswith("ours"):
        from codec.quant import get_quantizer

        update = "ema" if impl.endswith("ema") else "loss"
        return get_quantizer("vq", dim=cell.d, codebook_size=cell.k, update=update, decay=0.99, beta=0.25)
    from vector_quantize_pytorch import VectorQuantize

    if impl == "vqp-ema":
        return VectorQuantize(dim=cell.d, codebook_size=cell.k, decay=0.99, commitment_weight=0.25)
    return VectorQuantize(
        dim=cell.d, codebook_size=cell.k, commitment_weight=0.25, learnable_codebook=True, ema_update=False
    )


def step(impl: str, q: torch.nn.Module, z: torch.Tensor, g: torch.Tensor) -> None:
    if impl.startswith("ours"):
        out = q(z)
        loss = (out.z_q * g).sum() + out.total_loss
    else:
        z_q, _, aux = q(z)
        loss = (z_q * g).sum() + aux.sum()
    loss.backward()
    z.grad = None
    for p in q.parameters():
        p.grad = None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(impl: str, cell: Cell, warmup: int, reps: int) -> Result:
    """Run one cell in this process (CPU: call from a fresh subprocess for a clean peak)."""
    device = torch.device(cell.device)
    torch.manual_seed(0)
    q = build(impl, cell).to(device).train()
    z = torch.randn(1, cell.n, cell.d, device=device, requires_grad=True)
    g = torch.randn(1, cell.n, cell.d, device=device)
    res = Result(cell, impl)
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(warmup):
            step(impl, q, z, g)
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step(impl, q, z, g)
            end.record()
            torch.cuda.synchronize()
            res.times_ms.append(start.elapsed_time(end))
        res.peak_extra_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        base = _rss_bytes()
        t0 = time.perf_counter()
        for _ in range(warmup):
            step(impl, q, z, g)
        if warmup and (time.perf_counter() - t0) / warmup > 5.0:
            reps = 1  # a step of several seconds: one timed repeat keeps the CPU grid to minutes
        for _ in range(reps):
            t0 = time.perf_counter()
            step(impl, q, z, g)
            res.times_ms.append((time.perf_counter() - t0) * 1e3)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        res.peak_extra_mib = max(0, peak - base) / 2**20
    res.time_ms = statistics.median(res.times_ms)
    return res


def measure_subprocess(impl: str, cell: Cell, warmup: int, reps: int, timeout_s: float) -> Result:
    spec = json.dumps({"impl": impl, "cell": asdict(cell), "warmup": warmup, "reps": reps})
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--_cell", spec], capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return Result(cell, impl, status=f"timeout >{timeout_s:.0f}s")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        status = "OOM" if "memory" in last.lower() or proc.returncode in (-9, 137) else f"error: {last[:60]}"
        return Result(cell, impl, status=status)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return Result(cell, impl, time_ms=data["time_ms"], peak_extra_mib=data["peak_extra_mib"], times_ms=data["times_ms"])


def run_cell(impl: str, cell: Cell, warmup: int, reps: int, timeout_s: float) -> Result:
    if impl.startswith("vqp") and vqp_predicted_bytes(cell) > memory_budget(cell.device):
        return Result(cell, impl, status="skip (pred. OOM)")
    if cell.device == "cpu":
        return measure_subprocess(impl, cell, warmup, reps, timeout_s)
    try:
        return measure(impl, cell, warmup, reps)
    except torch.OutOfMemoryError:
        return Result(cell, impl, status="OOM")
    finally:
        torch.cuda.empty_cache()


def fmt(res: Result | None) -> str:
    if res is None:
        return "-"
    if res.status != "ok":
        return res.status
    return f"{res.time_ms:,.1f} ms / {res.peak_extra_mib / 1024:.2f} GiB"


def markdown_table(results: list[Result], meta: dict) -> str:
    """The results as a Markdown table (what the README shows)."""
    by = {(r.cell, r.impl): r for r in results}
    cells = list(dict.fromkeys(r.cell for r in results))
    head = "| device | N | D | K | ours EMA | v-q-p EMA | ours loss | v-q-p loss | speed-up EMA / loss |"
    lines = [
        f"Measured on {meta.get('cuda_device') or meta.get('cpu_model') or meta.get('machine')} "
        f"({meta.get('cpu_threads')} CPU threads), "
        f"torch {meta.get('torch')}. Cells: median step time / peak extra memory.",
        "",
        head,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        ups = []
        for kind in ("ema", "loss"):
            ours, theirs = by.get((c, f"ours-{kind}")), by.get((c, f"vqp-{kind}"))
            ok = ours and theirs and ours.status == theirs.status == "ok"
            ups.append(f"{theirs.time_ms / ours.time_ms:.1f}x" if ok else "-")
        row = [c.device, f"{c.n:,}", str(c.d), f"{c.k:,}"]
        row += [fmt(by.get((c, impl))) for impl in IMPLS]
        row.append(" / ".join(ups))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, text: str) -> None:
    if str(path) == "-":
        sys.stdout.write(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def print_table(results: list[Result]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover
        Console = None
    by = {(r.cell, r.impl): r for r in results}
    cells = list(dict.fromkeys(r.cell for r in results))
    headers = ["device", "N", "D", "K", *IMPLS, "ema speed-up", "loss speed-up"]
    rows = []
    for c in cells:
        row = [c.device, f"{c.n:,}", str(c.d), f"{c.k:,}"]
        row += [fmt(by.get((c, impl))) for impl in IMPLS]
        for kind in ("ema", "loss"):
            ours, theirs = by.get((c, f"ours-{kind}")), by.get((c, f"vqp-{kind}"))
            if ours and theirs and ours.status == theirs.status == "ok":
                row.append(f"{theirs.time_ms / ours.time_ms:.2f}x")
            else:
                row.append("-")
        rows.append(row)
    if Console is None:
        print(" | ".join(headers))
        for row in rows:
            print(" | ".join(row))
        return
    table = Table(title="vq training step (forward + backward): median time / peak extra memory")
    for h in headers:
        table.add_column(h, justify="right")
    for row in rows:
        table.add_row(*row)
    Console(width=220).print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="auto: CPU grid, plus the CUDA grid when a GPU is present")
    ap.add_argument("--quick", action="store_true", help="a small grid that finishes in well under a minute")
    ap.add_argument("--impl", nargs="+", choices=IMPLS, default=list(IMPLS))
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600.0, help="per CPU cell, seconds")
    ap.add_argument("--json", type=Path, default=None, help="write all results here")
    ap.add_argument("--markdown", type=Path, default=None, help="write a Markdown table here ('-': stdout)")
    ap.add_argument("--render", type=Path, default=None,
                    help="re-render tables from a --json file instead of measuring")
    ap.add_argument("--_cell", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._cell:  # child process of a CPU measurement
        spec = json.loads(args._cell)
        res = measure(spec["impl"], Cell(**spec["cell"]), spec["warmup"], spec["reps"])
        print(json.dumps({"time_ms": res.time_ms, "peak_extra_mib": res.peak_extra_mib, "times_ms": res.times_ms}))
        return

    if args.render:
        payload = json.loads(args.render.read_text())
        results = [
            Result(Cell(**r["cell"]), r["impl"], r["status"], r["time_ms"], r["peak_extra_mib"], r["times_ms"])
            for r in payload["results"]
        ]
        if args.markdown is None or str(args.markdown) != "-":
            print_table(results)
        if args.markdown:
            write_markdown(args.markdown, markdown_table(results, payload["meta"]))
        return

    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else ["cpu"]
    if args.device == "auto" and torch.cuda.is_available():
        devices.append("cuda")
    if "cuda" in devices and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")

    results: list[Result] = []
    for device in devices:
        for cell in grid(device, args.quick):
            for impl in args.impl:
                res = run_cell(impl, cell, args.warmup, args.reps, args.timeout)
                results.append(res)
                print(f"{device} N={cell.n} D={cell.d} K={cell.k} {impl}: {fmt(res)}", file=sys.stderr, flush=True)
    print_table(results)

    meta = {
        "cpu_model": _cpu_model(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if "cuda" in devices else None,
    }
    if args.markdown:
        write_markdown(args.markdown, markdown_table(results, meta))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"meta": meta, "results": [{**asdict(r), "cell": asdict(r.cell)} for r in results]}
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
