"""The codec training loop shared by ``image_codec`` and ``audio_codec``.

A recipe supplies its config (a dataclass with the fields read below), its data, its
signal-domain losses and its validation through :class:`RecipeHooks`; everything else — DDP,
bf16 autocast, the optional discriminator, gradient clipping, weight EMA, logging, sharded
checkpoints, exact resume, segments (``--stop-at``) and export — is here, once.

Per step ``t`` the batch and every random draw are seeded from ``(seed, t, rank)``, so a run
resumed from a checkpoint repeats the uninterrupted run exactly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

from codec.losses import feature_matching_loss, hinge_discriminator_loss, hinge_generator_loss
from codec.model import Codec, CodecOutput
from codec.nets.discriminators import get_discriminator
from recipes.common import (
    MetricLogger,
    ModelEMA,
    cleanup_distributed,
    cosine_schedule,
    latest_checkpoint,
    load_checkpoint,
    load_config,
    log_term,
    restore_training_state,
    save_checkpoint,
    seed_everything,
    setup_distributed,
    training_state,
)
from recipes.data import step_seed

__all__ = ["TrainConfig", "RecipeHooks", "parse_recipe_args", "run_recipe", "published_model"]

LOGGED_METRICS = ("perplexity", "usage", "levels_used", "codebook_size")


@dataclass(frozen=True)
class TrainConfig:
    """The fields the loop reads; recipes subclass it with their data and loss fields."""

    data: str = "data"
    out: str = "runs/codec"
    network: str = "image-resnet"
    network_kwargs: dict[str, Any] = field(default_factory=dict)
    quantizer: str = "rvq"
    quantizer_kwargs: dict[str, Any] = field(
        default_factory=lambda: dict(codebook_size=1024, num_levels=4, quantizer_dropout=0.5,
                                     dead_code_threshold=1.0, init="kmeans")
    )
    batch_size: int = 16
    steps: int = 100_000
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 1000
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    recon_loss: str = "l1"  # "l1" or "l2": the per-sample reconstruction term weighted by l1_weight
    l1_weight: float = 1.0
    # > 0: the reconstruction term enters as recon_log_scale * ln(term) (gradient: the term's,
    # scaled by recon_log_scale / term), so every step's error counts relative to its own size. A
    # decoder fine-tune over many rate points then maximises their mean PSNR (with "l2") instead of
    # letting the large errors of the lowest points dominate; set it near the term's typical value
    # so the other terms keep their weight
    recon_log_scale: float = 0.0
    quantizer_weight: float = 1.0
    adv_weight: float = 0.0
    feature_weight: float = 0.0
    adv_start: int = 20_000
    val_fraction: float = 0.1
    val_every: int = 2000
    log_every: int = 50
    checkpoint_every: int = 2000
    keep_checkpoints: int = 3
    max_shard_mb: int = 16
    seed: int = 0
    bf16: bool = True
    device: str = "auto"
    # fine-tuning: a checkpoint folder, or a run folder (its latest checkpoint); a fresh run starts
    # at step 0 from that checkpoint's EMA weights (optimizer and schedule start anew). --resume wins.
    init_from: str = ""
    # start from a published model (a name from `vqcodec models`, or a model folder): its network,
    # quantizer and weights replace the network/quantizer fields above
    init_model: str = ""
    # "all", or "decoder": the decoder alone trains, on the codes the frozen encoder and quantizer
    # write (Codec.frozen_codes_forward), so codes, entropy tables and rates stay those of init_model
    train_parts: str = "all"
    # decoder fine-tuning of an audio model with band energies: the signal losses also score the
    # decoder output after the energy correction files with band energies get (tagged "@env")
    through_envelope: bool = False
    # with through_envelope: the weight of the signal losses on the raw decoder output (0: only the
    # corrected output is scored; the "l1" term stays on the raw output)
    raw_signal_weight: float = 1.0
    # decoder fine-tuning: the rate points a step draws from (default: the model's rate-target
    # points, else all of them), e.g. ["k64-n1", "k256-n1", "k1024-n1"] for its lowest rates
    train_points: list[str] = field(default_factory=list)
    # decoder fine-tuning: network kwargs changed from init_model's, for a deeper decoder grown from
    # its own (e.g. {"decoder_res_blocks": [4, 2]} for image-gdn): every layer the published decoder
    # has keeps its weights, the new ones start as the identity, and the encoder must stay the same
    network_overrides: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "val_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.recon_log_scale < 0:
            raise ValueError(f"recon_log_scale must be >= 0, got {self.recon_log_scale}")
        if self.recon_loss not in ("l1", "l2"):
            raise ValueError(f"recon_loss must be 'l1' or 'l2', got {self.recon_loss!r}")
        if "codebook_size" not in self.quantizer_kwargs:
            raise ValueError("quantizer_kwargs needs codebook_size")
        if self.train_parts not in ("all", "decoder"):
            raise ValueError(f"train_parts must be 'all' or 'decoder', got {self.train_parts!r}")
        if self.train_parts == "decoder" and not self.init_model:
            raise ValueError("train_parts='decoder' fine-tunes a published model's decoder: set init_model")
        if self.through_envelope and self.train_parts != "decoder":
            raise ValueError("through_envelope trains a published model's decoder: set train_parts='decoder'")
        if self.raw_signal_weight < 0 or (self.raw_signal_weight != 1.0 and not self.through_envelope):
            raise ValueError("raw_signal_weight must be >= 0 and weighs the raw output beside through_envelope only")
        if self.train_points and self.train_parts != "decoder":
            raise ValueError("train_points choose the codes a decoder fine-tune decodes: set train_parts='decoder'")
        if self.network_overrides and self.train_parts != "decoder":
            raise ValueError("network_overrides grow a published model's decoder: set train_parts='decoder'")


@dataclass
class RecipeHooks:
    """What differs between recipes.

    Attributes:
        name: recipe name (stored in the exported model's metadata).
        discriminator: registry name of the discriminator used when ``adv_weight > 0``.
        make_data: ``(cfg, model) -> data`` with ``data.batch(seed, batch_size) -> Tensor``.
        make_signal_losses: ``(cfg, model, device) -> fn(target, recon) -> {name: loss}``, applied to
            every reconstruction of a step (network domain, unclamped); weights included.
        to_discriminator: maps a network-domain signal to the discriminator's input domain.
        validate: ``(model, data, cfg, device) -> {metric: value}`` (it puts the model in eval mode;
            the loop restores the training mode afterwards).
    """

    name: str
    discriminator: str
    make_data: Callable[[Any, Codec], Any]
    make_signal_losses: Callable[[Any, Codec, torch.device], Callable[[Tensor, Tensor], dict[str, Tensor]]]
    to_discriminator: Callable[[Tensor], Tensor]
    validate: Callable[[Codec, Any, Any, torch.device], dict[str, float]]


def parse_recipe_args(description: str, presets: Mapping[str, Any], argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--config", default="default", help=f"preset ({', '.join(presets)}) or a JSON file")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    ap.add_argument("--out", default=None, help="output folder (overrides the config's 'out')")
    ap.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    ap.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                    help="checkpoint and stop at this step (run long trainings in segments)")
    return ap.parse_args(argv)


def _raq_tag(name: str) -> bool:
    """Whether ``name`` carries the tag of a RAQ pass with an adapted codebook ("mel@k37")."""
    tag = name.partition("@")[2]
    return tag[:1] == "k" and tag[1:].isdigit()


def _log_values(terms: Mapping[str, Tensor], metrics: Mapping[str, Tensor]) -> dict[str, float]:
    """Loss terms and chosen metrics; tags of multi-rate passes ("mel@k37") vary per step, so
    they are logged under a stable name ("mel@adapted"); other tags ("mel@env") stay."""
    values: dict[str, float] = {}
    for k, v in terms.items():
        key = k.split("@")[0] + "@adapted" if _raq_tag(k) else k
        values[key] = values.get(key, 0.0) + float(v.detach())
    for k, v in metrics.items():
        if k.split("@")[0] in LOGGED_METRICS:
            values[k.split("@")[0] + "@adapted" if _raq_tag(k) else k] = float(v)
    return values


def published_model(name_or_path: str, recon_loss: str, network_overrides: Mapping[str, Any] | None = None) -> Codec:
    """A published model (name or folder) to train on from, with this run's reconstruction loss.

    ``network_overrides``: network kwargs changed from the model's (a grown decoder). The model is
    rebuilt with them and takes the published weights of every layer it shares; it must not miss
    any of them, and may add only decoder layers, which must start as the identity: the grown
    model has to decode the published codes exactly as the published model does (checked on a
    random latent). Entropy tables, measured rates and rate targets carry over.
    """
    from codec.hub import resolve

    model = Codec.load(resolve(name_or_path))
    if network_overrides:
        base = model
        config = base.export_config()
        config["network"] = {**config["network"], "kwargs": {**config["network"]["kwargs"], **dict(network_overrides)}}
        model = Codec.from_config(config)
        if model.inference_only:
            model.strip_training_state(publish=False)
        old, new = base.state_dict(), model.state_dict()
        changed = [k for k in old if k not in new or new[k].shape != old[k].shape]
        changed += [k for k in new if k not in old and not k.startswith("decoder.")]
        if changed:
            raise ValueError(f"network_overrides {dict(network_overrides)} change more than the decoder's depth: "
                             f"{', '.join(changed[:5])} would not keep the published weights")
        model.load_state_dict(old, strict=False)
        model.entropy_tables, model.context_tables = base.entropy_tables, base.context_tables
        model.postfilter, model.shallow_decoder = base.postfilter, base.shallow_decoder  # decoder-side stages, as published
        model.eval()
        with torch.no_grad():
            latent = torch.randn(1, base.encoder.latent_dim, *([8] * (2 if base.modality == "image" else 1)))
            if not torch.allclose(model.decoder(latent), base.decoder(latent), atol=1e-6):
                raise ValueError(f"network_overrides {dict(network_overrides)}: the grown decoder does not start as the "
                                 "published one (its new layers are not the identity)")
    model.recon_loss = recon_loss
    if model.config is not None:
        model.config["recon_loss"] = recon_loss
    return model


def init_weights(source: str | Path, model: nn.Module, ema: ModelEMA) -> None:
    """Load the EMA weights of a checkpoint (or of a run folder's latest one) into ``model`` and ``ema``."""
    path = Path(source)
    ckpt = path if (path / "state.json").is_file() else latest_checkpoint(path / "checkpoints")
    if ckpt is None:
        raise FileNotFoundError(f"init_from: no checkpoint at {path} or under {path / 'checkpoints'}")
    state = load_checkpoint(ckpt, restore_rng=False)
    model.load_state_dict(state["ema"])
    ema.load_state_dict(state["ema"], int(state["ema_updates"]))


def run_recipe(cls: type, presets: Mapping[str, Any], hooks: RecipeHooks, argv: list[str] | None) -> Path:
    """Parse arguments, train, export; returns the export folder (``<out>/export``)."""
    args = parse_recipe_args(cls.__doc__ or hooks.name, presets, argv)
    overrides = list(args.set) + ([f"out={args.out}"] if args.out else [])
    cfg = load_config(cls, presets, args.config, overrides)
    dist = setup_distributed(cfg.device)
    device = dist.device
    out = Path(cfg.out)
    seed_everything(cfg.seed)

    def build() -> Codec:
        if cfg.init_model:
            return published_model(cfg.init_model, cfg.recon_loss, cfg.network_overrides)
        return Codec.build(cfg.network, cfg.quantizer, network_kwargs=cfg.network_kwargs,
                           quantizer_kwargs=cfg.quantizer_kwargs, recon_loss=cfg.recon_loss)

    model = build().to(device)
    decoder_only = cfg.train_parts == "decoder"
    trained = model.decoder if decoder_only else model  # what the optimiser, the EMA and DDP see
    points = (list(cfg.train_points) or model.target_points or [p.name for p in model.rate_points()]) if decoder_only else []
    unknown = sorted(set(points) - {p.name for p in model.rate_points()})
    if unknown:
        raise ValueError(f"train_points {', '.join(unknown)} are not rate points of {cfg.init_model}")

    def train_mode() -> None:
        if decoder_only:  # encoder and quantizer stay in eval mode: they write the codes files get
            model.eval()
            model.decoder.train()
        else:
            model.train()

    if decoder_only:
        model.requires_grad_(False)
        trained.requires_grad_(True)
    train_mode()
    use_adv = cfg.adv_weight > 0 or cfg.feature_weight > 0
    disc = get_discriminator(hooks.discriminator).to(device) if use_adv else None
    opt = torch.optim.AdamW(trained.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    sched = cosine_schedule(opt, cfg.warmup_steps, cfg.steps)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.9)) if disc is not None else None
    ema = ModelEMA(model, cfg.ema_decay,
                   averaged={k for k in model.state_dict() if k.startswith("decoder.")} if decoder_only else None)

    start = 0
    ckpt = latest_checkpoint(out / "checkpoints") if args.resume else None
    if args.resume and ckpt is None and dist.is_main:
        print(f"--resume: no checkpoint under {out / 'checkpoints'}; starting from step 0")
    if ckpt is not None:
        start = restore_training_state(load_checkpoint(ckpt), model, opt, sched, ema, disc, opt_d)
    elif cfg.init_from:
        init_weights(cfg.init_from, model, ema)
        if dist.is_main:
            print(f"initialised from {cfg.init_from} (EMA weights)")

    train_model = DDP(trained, broadcast_buffers=False, find_unused_parameters=True) if dist.world_size > 1 else trained
    train_disc = DDP(disc, broadcast_buffers=False) if disc is not None and dist.world_size > 1 else disc
    data = hooks.make_data(cfg, model)
    signal_losses = hooks.make_signal_losses(cfg, model, device)
    logger = MetricLogger(out, cfg.steps, start, enabled=dist.is_main)
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))

    stop = min(cfg.steps, args.stop_at) if args.stop_at else cfg.steps
    for step in range(start, stop):
        seed = step_seed(cfg.seed, step, dist.rank)
        torch.manual_seed(seed)  # quantizer dropout, Gumbel noise, restarts: reproducible per step
        x = data.batch(seed, cfg.batch_size).to(device, non_blocking=True)
        adv_on = disc is not None and step >= cfg.adv_start
        point = points[int(torch.randint(len(points), ()))] if decoder_only else None
        with torch.autocast(**autocast):
            res: CodecOutput = (model.frozen_codes_forward(x, point, train_model, cfg.through_envelope)
                                if decoder_only else train_model(x))
            target = res.recon_target.float()
            terms: dict[str, Tensor] = {}
            for name, value in res.loss.items():  # "recon" and quantizer terms, tagged "@k37" for RAQ passes
                if name.startswith("recon"):
                    if cfg.recon_log_scale > 0:
                        value = log_term(value, cfg.recon_log_scale, floor=1e-10)
                    terms["l1" + name[5:]] = cfg.l1_weight * value
                else:
                    terms[name] = cfg.quantizer_weight * value
            for tag, recon in {"": res.recon, **res.extra_recons}.items():
                weight = cfg.raw_signal_weight if tag == "" else 1.0  # 1 unless through_envelope
                if weight > 0:
                    terms.update({name + tag: weight * value for name, value in signal_losses(target, recon.float()).items()})
            if adv_on:
                fake_in, real_in = hooks.to_discriminator(res.recon.float()), hooks.to_discriminator(target)
                logits_fake, feats_fake = train_disc(fake_in)
                with torch.no_grad():
                    _, feats_real = train_disc(real_in)
                terms["adv"] = cfg.adv_weight * hinge_generator_loss(logits_fake)
                terms["feature"] = cfg.feature_weight * feature_matching_loss(feats_real, feats_fake)
            loss = torch.stack([v.float() for v in terms.values()]).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        ema.update(model)
        if adv_on:
            with torch.autocast(**autocast):
                real, _ = train_disc(real_in)
                fake, _ = train_disc(fake_in.detach())
                d_loss = hinge_discriminator_loss(real, fake)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            terms["disc"] = d_loss.detach()

        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            values = _log_values(terms, res.metrics)
            values.update(loss=float(loss.detach()), grad_norm=float(grad_norm), lr=sched.get_last_lr()[0])
            logger.log(done, values)
        else:
            logger.advance(done)
        if (done % cfg.checkpoint_every == 0 or done in (cfg.steps, stop)) and dist.is_main:
            save_checkpoint(out / "checkpoints", done, training_state(cfg, model, opt, sched, ema, disc, opt_d),
                            keep=cfg.keep_checkpoints, max_shard_bytes=cfg.max_shard_mb * 2**20)
        if (done % cfg.val_every == 0 or done == cfg.steps) and dist.is_main:
            logger.log(done, hooks.validate(model, data, cfg, device), split="val")
            train_mode()

    logger.close()
    export = out / "export"
    if dist.is_main and stop == cfg.steps:
        final = build()
        final.load_state_dict({k: v.cpu() for k, v in ema.state_dict().items()})
        if cfg.init_model and final.config is not None:
            final.config["name"] = ""  # new weights: publishing gives them a name of their own
        final.save(export, metadata={"recipe": hooks.name, "steps": str(cfg.steps)})
    cleanup_distributed()
    return export
