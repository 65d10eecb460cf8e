"""The ``meshtalk`` command line: one library call per command.

Known errors print one line on stderr and exit with status 1; set ``MESHTALK_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="meshtalk",
    help="Train, evaluate and run the MeshTalk model on facedata stores.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print the package version."""
    from meshtalk import __version__

    typer.echo(__version__)


@app.command("import-reference")
def import_reference(
    directory: Annotated[Path, typer.Argument(help="Directory of encoder.pkl, vertex_unet.pkl, context_model.pkl.")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint file to write (this project's format).")],
) -> None:
    """Convert the released MeshTalk weights (reference state dicts) into one checkpoint."""
    from meshtalk.reference import import_reference as convert

    model = convert(directory, out)
    c = model.config
    typer.echo(f"wrote {out}: H={c.heads} C={c.classes} V={c.n_vertices}, "
               f"{model.parameter_counts()['total']:,} parameters")


def main() -> None:
    from facedata.errors import FacedataError

    try:
        app()
    except FacedataError as e:
        if os.environ.get("MESHTALK_DEBUG"):
            raise
        typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
        sys.exit(1)
