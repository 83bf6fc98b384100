"""Training utilities shared by the recipes: configs, distributed setup, checkpoints, EMA, logs.

Only torch, numpy and safetensors are required (rich and TensorBoard are used when installed),
so recipes run on machines that have nothing else.

Checkpoints are folders ``<out>/checkpoints/step-00001000/`` holding

* ``tensors-00000.safetensors``, ``tensors-00001.safetensors``, ...: every tensor (model, weight
  EMA, optimiser state, RNG states), split greedily into files of at most ``max_shard_bytes``
  (16 MiB by default; a single tensor larger than that gets a file of its own);
* ``state.json``: step, config, optimiser hyper-parameters and non-tensor state, scheduler
  state, Python and NumPy RNG state, and the index of which tensor lives in which file.

A checkpoint is written to ``step-N.tmp`` and renamed when complete, then ``latest`` is updated:
a run killed mid-write resumes from the previous checkpoint.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "DistInfo",
    "setup_distributed",
    "cleanup_distributed",
    "load_config",
    "apply_overrides",
    "ModelEMA",
    "cosine_schedule",
    "log_term",
    "save_checkpoint",
    "training_state",
    "restore_training_state",
    "load_checkpoint",
    "latest_checkpoint",
    "MetricLogger",
    "seed_everything",
    "validation_points",
    "unwrap",
]

DEFAULT_SHARD_BYTES = 16 * 2**20


# -- configs ---------------------------------------------------------------------------------------
def _coerce(value: str, target: Any, key: str) -> Any:
    """Parse a ``--set key=value`` string into the type of the field's current value."""
    if isinstance(target, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key}: expected a boolean, got {value!r}")
    if isinstance(target, int) and not isinstance(target, bool):
        return int(value)
    if isinstance(target, float):
        return float(value)
    if isinstance(target, (dict, list, tuple)) or target is None:
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            if target is None:
                return value
            raise ValueError(f"{key}: expected JSON, got {value!r}") from None
    return value


def apply_overrides(cfg: Any, overrides: Iterable[str]) -> Any:
    """Apply ``key=value`` (or ``dict_field.key=value``) overrides to a config dataclass.

    Unknown fields are an error; values are parsed to the field's current type.
    """
    names = {f.name for f in dataclasses.fields(cfg)}
    changes: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        top, _, sub = key.partition(".")
        if top not in names:
            raise ValueError(f"unknown config field {top!r}; fields: {', '.join(sorted(names))}")
        current = changes.get(top, getattr(cfg, top))
        if sub:
            if not isinstance(current, dict):
                raise ValueError(f"{top} is not a mapping; cannot set {key}")
            new = dict(current)
            new[sub] = _coerce(value, current.get(sub), key)
            changes[top] = new
        else:
            changes[top] = _coerce(value, current, key)
    return dataclasses.replace(cfg, **changes)


def load_config(cls: type, presets: Mapping[str, Any], name_or_path: str, overrides: Iterable[str] = ()) -> Any:
    """A preset by name, or a JSON file of field values, then ``--set`` overrides; validated."""
    if name_or_path in presets:
        cfg = presets[name_or_path]
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ValueError(f"config {name_or_path!r} is neither a preset ({', '.join(presets)}) nor a file")
        data = json.loads(path.read_text())
        base = presets.get(data.pop("preset", "default"), cls())
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"{path}: unknown config fields {sorted(unknown)}")
        cfg = dataclasses.replace(base, **data)
    cfg = apply_overrides(cfg, overrides)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    return cfg


# -- distributed ----------------------------------------------------------------------------------
@dataclasses.dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "auto") -> DistInfo:
    """Initialise ``torch.distributed`` when launched by torchrun (NCCL on GPU, gloo on CPU)."""
    want_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if want_cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available")
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
        if want_cuda:
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if want_cuda else "gloo")
        dev = torch.device("cuda", local) if want_cuda else torch.device("cpu")
        return DistInfo(rank, world, local, dev)
    return DistInfo(0, 1, 0, torch.device("cuda") if want_cuda else torch.device("cpu"))


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def validation_points(points: list[Any], n: int = 4) -> list[Any]:
    """Up to ``n`` rate points spread over the sorted list, always including both ends."""
    if len(points) <= n:
        return list(points)
    idx = sorted({round(i * (len(points) - 1) / (n - 1)) for i in range(n)})
    return [points[i] for i in idx]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# -- weight EMA and schedule ------------------------------------------------------------------------
class ModelEMA:
    """Exponential moving average of a model's parameters (buffers are copied).

    ``decay`` is warmed up as ``min(decay, (1 + n) / (10 + n))`` so early averages are not
    dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, averaged: set[str] | None = None) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        # averaged: the entries that train (default: every floating one); the others are copied,
        # so frozen weights stay bit-exact (an average of equal values can round)
        self.averaged = averaged

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.dtype.is_floating_point and (self.averaged is None or k in self.averaged):
                s.mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, Tensor]:
        return self.shadow

    def load_state_dict(self, state: Mapping[str, Tensor], updates: int) -> None:
        for k, v in state.items():
            self.shadow[k].copy_(v)
        self.updates = updates


def cosine_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int, min_ratio: float = 0.1):
    """Linear warm-up then cosine decay to ``min_ratio`` of the base learning rate."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def log_term(term: Tensor, scale: float, floor: float) -> Tensor:
    """``scale * ln(term)`` (``term`` clamped to ``floor``): a loss term counted relative to its own
    size, its gradient the term's scaled by ``scale / term``. Over many rate points a fine-tune then
    optimises the mean of the points' logarithmic measures (PSNR for squared error) instead of
    letting the points with the largest terms dominate."""
    return scale * torch.log(term.float().clamp_min(floor))


# -- checkpoints ---------------------------------------------------------------------------------------
def _split_state(obj: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    """Replace tensors in a nested structure by ``{"__tensor__": key}`` and collect them."""
    if isinstance(obj, Tensor):
        key = prefix
        tensors[key] = obj.detach().contiguous().cpu().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_split_state(k, f"{prefix}.k{i}", tensors), _split_state(v, f"{prefix}.{i}", tensors)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        return {"__list__" if isinstance(obj, list) else "__tuple__": [_split_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} at {prefix}")


def _join_state(obj: Any, tensors: Mapping[str, Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_join_state(k, tensors): _join_state(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            return [_join_state(v, tensors) for v in obj["__list__"]]
        if "__tuple__" in obj:
            return tuple(_join_state(v, tensors) for v in obj["__tuple__"])
    return obj


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state((npst[0], npst[1].numpy().astype(np.uint32), *npst[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def save_checkpoint(
    folder: str | Path,
    step: int,
    state: Mapping[str, Any],
    *,
    keep: int = 3,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> Path:
    """Write ``state`` (nested dicts/lists of tensors and JSON values) plus RNG state as a checkpoint.

    Returns the checkpoint folder. Older checkpoints beyond the newest ``keep`` are removed.
    """
    from safetensors.torch import save_file

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f"step-{step:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tensors: dict[str, Tensor] = {}
    skeleton = _split_state({**state, "rng": _rng_state()}, "t", tensors)
    shards: list[dict[str, Tensor]] = [{}]
    size = 0
    for key, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += nbytes
    index = {}
    for i, shard in enumerate(shards):
        name = f"tensors-{i:05d}.safetensors"
        save_file(shard, str(tmp / name))
        index.update({k: name for k in shard})
    (tmp / "state.json").write_text(json.dumps({"step": step, "skeleton": skeleton, "index": index}))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    (root / "latest.tmp").write_text(final.name)
    (root / "latest.tmp").replace(root / "latest")
    for old in sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: str | Path) -> Path | None:
    root = Path(folder)
    pointer = root / "latest"
    if pointer.is_file():
        ckpt = root / pointer.read_text().strip()
        if (ckpt / "state.json").is_file():
            return ckpt
    done = sorted(p for p in root.glob("step-*") if (p / "state.json").is_file() and not p.name.endswith(".tmp"))
    return done[-1] if done else None


def load_checkpoint(path: str | Path, restore_rng: bool = True) -> dict[str, Any]:
    """Read a checkpoint folder back into the nested structure given to :func:`save_checkpoint`."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = json.loads((path / "state.json").read_text())
    tensors: dict[str, Tensor] = {}
    for name in sorted(set(meta["index"].values())):
        tensors.update(load_file(str(path / name)))
    state = _join_state(meta["skeleton"], tensors)
    if restore_rng:
        _set_rng_state(state["rng"])
    state["step"] = meta["step"]
    return state


def training_state(
    cfg: Any,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    ema: ModelEMA,
    disc: nn.Module | None = None,
    disc_optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Everything a resumed run needs, as a nested structure for :func:`save_checkpoint`."""
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "ema": ema.state_dict(), "ema_updates": ema.updates, "config": dataclasses.asdict(cfg),
    }
    if disc is not None and disc_optimizer is not None:
        state.update(disc=disc.state_dict(), disc_optimizer=disc_optimizer.state_dict())
    return state


def restore_training_state(
    state: Mapping[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    ema: ModelEMA,
    disc: nn.Module | None = None,
    disc_optimizer: torch.optim.Optimizer | None = None,
) -> int:
    """Inverse of :func:`training_state`; returns the step to continue from."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    ema.load_state_dict(state["ema"], state["ema_updates"])
    if disc is not None and disc_optimizer is not None and "disc" in state:
        disc.load_state_dict(state["disc"])
        disc_optimizer.load_state_dict(state["disc_optimizer"])
    return int(state["step"])


# -- logging -----------------------------------------------------------------------------------------
class MetricLogger:
    """CSV log (one row per logged step), optional TensorBoard, and a rich progress bar.

    Only rank 0 writes. ``rich`` and ``tensorboard`` are optional.
    """

    def __init__(self, out_dir: Path, total_steps: int, start_step: int = 0, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = out_dir / "log.csv"
        self.fields: list[str] | None = None
        self.t0 = time.time()
        self.start_step = start_step
        self.tb = None
        self.progress = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            with self.path.open() as f:
                header = f.readline().strip()
            self.fields = header.split(",") if header else None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tensorboard"))
        except Exception:  # tensorboard not installed
            self.tb = None
        if sys.stderr.isatty():
            try:
                from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

                self.progress = Progress(
                    TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                )
                self.task = self.progress.add_task("train", total=total_steps, completed=start_step, info="")
                self.progress.start()
            except ImportError:
                self.progress = None

    def log(self, step: int, values: Mapping[str, float], split: str = "train") -> None:
        if not self.enabled:
            return
        row = {"step": step, "split": split, "time_s": round(time.time() - self.t0, 3)}
        row.update({k: float(v) for k, v in values.items()})
        if self.fields is None:
            self.fields = list(row)
            with self.path.open("w", newline="") as f:
                csv.DictWriter(f, self.fields).writeheader()
        for k in row:
            if k not in self.fields:
                self.fields.append(k)
                self._rewrite_header()
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(row)
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{split}/{k}", float(v), step)
        info = " ".join(f"{k}={float(v):.4g}" for k, v in list(values.items())[:4])
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=f"{split} {info}")
        else:
            print(f"[{split}] step {step} {info}", file=sys.stderr, flush=True)

    def _rewrite_header(self) -> None:
        rows = list(csv.DictReader(self.path.open())) if self.path.exists() else []
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, self.fields)
            w.writeheader()
            w.writerows(rows)

    def advance(self, step: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.tb is not None:
            self.tb.close()
