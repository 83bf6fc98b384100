"""The ``vqcodec`` command.

Commands so far: ``vqcodec quantizers`` (the registered quantizers and what a token costs in
each), ``vqcodec train RECIPE ...`` (run a training recipe) and ``vqcodec --version``.
"""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

import codec

app = typer.Typer(
    name="vqcodec",
    help="Neural audio and image codecs built on vector quantization.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


def _version(value: bool) -> None:
    if value:
        console.print(f"vqcodec {codec.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Neural audio and image codecs built on vector quantization."""


@app.command()
def quantizers(
    dim: int = typer.Option(64, min=1, help="Token dimension D to instantiate each quantizer with."),
    codebook_size: int = typer.Option(1024, min=2, help="Codebook size K to instantiate each quantizer with."),
) -> None:
    """List the registered quantizers with their real codebook size, bits per token and parameters."""
    from codec.quant import get_quantizer, list_quantizers

    table = Table(title=f"quantizers at dim={dim}, codebook_size={codebook_size}")
    for col in ("name", "class", "codebook size", "bits/token", "parameters", "buffers"):
        table.add_column(col, justify="left" if col in ("name", "class") else "right")
    for name in list_quantizers():
        try:
            q = get_quantizer(name, dim=dim, codebook_size=codebook_size)
        except ValueError as err:  # e.g. a shape that does not split dim
            table.add_row(name, "-", "-", "-", "-", f"[red]{err}[/red]")
            continue
        params = sum(p.numel() for p in q.parameters())
        buffers = sum(b.numel() for b in q.buffers())
        table.add_row(
            name, type(q).__name__, f"{q.codebook_size:,}", f"{q.bits_per_token:.2f}", f"{params:,}", f"{buffers:,}"
        )
    console.print(table)


RECIPES = {"image_codec": "recipes.image_codec", "audio_codec": "recipes.audio_codec"}


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help="Run a training recipe: vqcodec train RECIPE [--config NAME|FILE] [--set KEY=VALUE ...] "
    "[--out DIR] [--resume] [--stop-at STEP]. Recipes: " + ", ".join(RECIPES) + ".",
)
def train(ctx: typer.Context, recipe: str = typer.Argument(..., help="image_codec or audio_codec")) -> None:
    import importlib

    if recipe not in RECIPES:
        console.print(f"[red]unknown recipe {recipe!r}[/red]; available: {', '.join(RECIPES)}")
        raise typer.Exit(2)
    module = importlib.import_module(RECIPES[recipe])
    try:
        export = module.main(list(ctx.args))
    except (ValueError, FileNotFoundError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    console.print(f"done; exported model: {export}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
