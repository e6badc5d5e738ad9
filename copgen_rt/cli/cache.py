"""`copgen-rt cache`: what the cache folder holds (exports, compiled models, kernels, engine
measurements) per model and engine, with sizes; `--clear` removes it, or one model's files."""

from __future__ import annotations

import click

from copgen_rt.cli.errors import friendly_errors


@click.command("cache")
@click.option("--clear", is_flag=True, help="remove what is listed (with --model: that model's files only)")
@click.option("--model", help="only this model's exports and compiled models (e.g. copgen-base)")
@friendly_errors
def command(clear: bool, model: str | None) -> None:
    """List what the cache folder ($COPGEN_RT_CACHE, else ~/.cache/copgen-rt) holds, per model
    and engine, with sizes. Everything in it is made again on first use."""
    from copgen_rt.backends.export_cache import cache_root
    from copgen_rt.cache_contents import clear as clear_cache
    from copgen_rt.cache_contents import contents, human_size

    entries = [e for e in contents() if model is None or e.model == model]
    if clear:
        entries = clear_cache(model)
    width = max((len(e.model) for e in entries), default=0)
    for e in entries:
        count = f"{len(e.paths)} files/folders"
        click.echo(f"{e.model:<{width}}  {e.kind:<36} {count:>17}  {human_size(e.size):>10}")
    total = human_size(sum(e.size for e in entries))
    what = f"{model}'s files" if model else "everything"
    if clear:
        click.echo(f"removed {what} from {cache_root()}: {total}", err=True)
    elif entries:
        click.echo(f"{total} in {cache_root()} ({what}; copgen-rt cache --clear [--model NAME] removes it)")
    else:
        click.echo(f"nothing cached{f' for {model}' if model else ''} in {cache_root()}")
