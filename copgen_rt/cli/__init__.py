"""The `copgen-rt` command line: one module per command (options parsed, the Python API called),
the options several commands share (`options`), one-line errors (`errors`) and progress
(`progress`). The entry point that installs the signal handlers first is `copgen_rt.__main__`."""

from __future__ import annotations

import click

from copgen_rt.cli import (
    bench,
    build_engines,
    cache,
    convert,
    export,
    fill,
    infer,
    info,
    make_random_weights,
    serve,
)
from copgen_rt.cli.errors import OneLineUsageErrors, one_line_messages, require_stdout
from copgen_rt.cli.progress import say_phases


@click.group(cls=OneLineUsageErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="copgen-rt")
def main() -> None:
    """copgen-rt: run COP-GEN multimodal Copernicus generation in production."""
    require_stdout()
    one_line_messages()
    say_phases()


for module in (info, infer, fill, make_random_weights, convert, export, build_engines, bench, serve, cache):
    main.add_command(module.command)
