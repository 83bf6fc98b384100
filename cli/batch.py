"""Inputs, outputs and error handling shared by the file commands of ``vqcodec``.

* :func:`expand_inputs`: files, folders (recursed; the tree below the folder is mirrored in the
  output folder), glob patterns and ``-`` (standard input).
* :func:`plan_outputs`: one input -> ``-o`` is the output file; several inputs or a folder ->
  ``-o`` is a folder and outputs are named ``<stem><suffix>``; without ``-o`` each output goes
  beside its input.
* :func:`run_batch`: runs one job per input under a rich progress bar, reports each failure as
  one line on stderr and carries on, and returns the reports and the failure count.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from codec.io import InputError

__all__ = ["Item", "UsageError", "expand_inputs", "plan_outputs", "run_batch", "EXPECTED_ERRORS"]


class UsageError(Exception):
    """A command line that cannot be run (exit code 2)."""


@dataclass
class Item:
    """One input and where its output goes."""

    input: str  # a path, or "-" for standard input
    relative: Path  # path below the folder it was found in (mirrored in the output folder)
    output: str = ""
    error: str = ""  # set when the input could not even be found


def _candidates(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if not f.startswith(".") and Path(f).suffix.lower() in suffixes:
                out.append(Path(root) / f)
    return out


def expand_inputs(inputs: Sequence[str], suffixes: Sequence[str]) -> tuple[list[Item], bool]:
    """Expand the command's inputs -> ``(items, many)``; ``many`` is true for several or a folder.

    An input that matches nothing becomes an item carrying an error, so the batch reports it
    and goes on with the rest.
    """
    items: list[Item] = []
    many = len(inputs) > 1
    for raw in inputs:
        if raw == "-":
            items.append(Item("-", Path("stdin")))
            continue
        if not raw.strip():  # Path("") is the working folder: an empty argument (an unset variable) is no input
            items.append(Item(raw, Path("empty"), error="an input is an empty string"))
            continue
        p = Path(raw)
        if p.is_dir():
            many = True
            found = _candidates(p, suffixes)
            if not found:
                items.append(Item(raw, Path(p.name), error=f"{raw}: no {'/'.join(suffixes)} files in this folder"))
            items += [Item(str(f), f.relative_to(p)) for f in found]
        elif p.exists():
            items.append(Item(raw, Path(p.name)))
        elif glob.has_magic(raw):
            matches = sorted(Path(m) for m in glob.glob(raw, recursive=True) if Path(m).is_file())
            if not matches:
                items.append(Item(raw, Path(p.name), error=f"{raw}: no file matches this pattern"))
            many = many or len(matches) > 1
            items += [Item(str(m), Path(m.name)) for m in matches]
        else:
            items.append(Item(raw, Path(p.name), error=f"{raw}: no such file"))
    return items, many


def plan_outputs(items: list[Item], output: str | None, many: bool, suffix: Callable[[Item], str]) -> None:
    """Fill ``item.output`` for every item (see the module docstring)."""
    if output == "-" and many:
        raise UsageError("-o - (standard output) takes a single input")
    if not many and items and output is not None:
        if Path(output).is_dir():
            items[0].output = str(Path(output) / items[0].relative.with_suffix(suffix(items[0])).name)
        else:
            items[0].output = output
        return
    seen: dict[str, str] = {}
    for item in items:
        if item.error:
            continue
        if output is None:
            if item.input == "-":
                raise UsageError("reading standard input needs -o")
            target = Path(item.input).with_suffix(suffix(item))
        else:
            if Path(output).exists() and not Path(output).is_dir():
                raise UsageError(f"-o {output} must be a folder when there are several inputs")
            target = Path(output) / item.relative.with_suffix(suffix(item))
        key = str(target.resolve())
        if key in seen:
            item.error = f"{item.input}: its output {target} would collide with that of {seen[key]}"
            continue
        seen[key] = item.input
        item.output = str(target)


class _RateColumn(ProgressColumn):
    """Files per second and, for audio, the real-time factor (seconds of audio per second)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        if not elapsed or not task.completed:
            return Text("")
        audio = task.fields.get("audio_s", 0.0)
        parts = [f"{task.completed / elapsed:.2f} files/s"]
        if audio:
            parts.append(f"{audio / elapsed:.1f}x real time")
        return Text(", ".join(parts), style="progress.data.speed")


EXPECTED_ERRORS: tuple[type[BaseException], ...] = (InputError, ValueError, LookupError, FileExistsError, OSError)


def run_batch(
    items: list[Item],
    job: Callable[[Item, Callable[[float], None]], object],
    console: Console,
    *,
    description: str,
    debug: bool = False,
    quiet: bool = False,
    audio_seconds: Callable[[object], float] = lambda r: 0.0,
) -> tuple[list[object], int]:
    """Run ``job(item, tick)`` per item under a progress bar -> ``(reports, failures)``.

    ``tick(fraction)`` moves the bar within the current item (a long audio file is read and
    written chunk by chunk), so one long file shows progress too.

    A failure prints ``error: <message>`` (one line) and the batch goes on; with ``debug`` the
    exception propagates with its traceback instead.
    """
    reports: list[object] = []
    failures = 0
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True, disable=quiet) as progress:
        task = progress.add_task(description, total=len(items), audio_s=0.0)
        audio = 0.0
        for index, item in enumerate(items):
            progress.update(task, description=f"{description} {Path(item.input).name}", completed=index)

            def tick(fraction: float, index: int = index) -> None:
                progress.update(task, completed=index + min(1.0, max(0.0, fraction)))

            if item.error:
                console.print(f"[red]error:[/red] {item.error}", highlight=False, soft_wrap=True)
                failures += 1
            else:
                try:
                    report = job(item, tick)
                    reports.append(report)
                    audio += audio_seconds(report)
                except KeyboardInterrupt:
                    raise
                except EXPECTED_ERRORS as err:
                    if debug:
                        raise
                    failures += 1
                    console.print(f"[red]error:[/red] {_message(item, err)}", highlight=False, soft_wrap=True)
            progress.update(task, completed=index + 1, audio_s=audio)
    return reports, failures


def _message(item: Item, err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    if isinstance(err, OSError) and not isinstance(err, FileExistsError) and getattr(err, "strerror", None):
        text = f"{err.filename or item.input}: {err.strerror}"
    first = text.splitlines()[0]
    return first if item.input in first or item.input == "-" else f"{item.input}: {first}"

