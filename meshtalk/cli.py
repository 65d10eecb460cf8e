"""The ``meshtalk`` command line: one library call per command.

Known errors print one line on stderr and exit with status 1; set ``MESHTALK_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import os
import sys

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


def main() -> None:
    from facedata.errors import FacedataError

    try:
        app()
    except FacedataError as e:
        if os.environ.get("MESHTALK_DEBUG"):
            raise
        typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
        sys.exit(1)
