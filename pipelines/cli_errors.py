"""How every geoseg command reports errors: one line on stderr and an exit code.

``GeosegError`` (bad input, bad options, unwritable output) becomes ``error: <message>``:
exit 2 for a ``ConfigError`` (options the command cannot run with: a usage error, found
before any work starts), exit 1 for the rest. The traceback is shown only with
``--debug``, given to the command or to the ``geoseg`` group.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from geoseg.errors import ConfigError, GeosegError


def _debug_wanted(ctx: click.Context, debug: bool) -> bool:
    """--debug on this command, or on the `geoseg` group it is registered in."""
    root = ctx.find_root()
    group_debug = root is not ctx and isinstance(root.obj, dict) and root.obj.get("debug")
    return debug or bool(group_debug)


def debug_wanted(ctx: click.Context) -> bool:
    """True when ``--debug`` was given to the ``geoseg`` group or to the running command."""
    obj = ctx.obj if isinstance(ctx.obj, dict) else {}
    root = ctx.find_root().obj if isinstance(ctx.find_root().obj, dict) else {}
    return bool(obj.get("debug") or root.get("debug"))


def one_line_errors(function: Callable[..., Any]) -> Callable[..., Any]:
    """Run the command; turn GeosegError into one line and exit 2 (ConfigError) or 1
    unless --debug."""
    @functools.wraps(function)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        if debug:  # the command's --debug counts like the group's, for the command too
            ctx.ensure_object(dict)["debug"] = True
        try:
            return function(*args, **kwargs)
        except GeosegError as exc:
            if _debug_wanted(ctx, debug):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2 if isinstance(exc, ConfigError) else 1)

    return click.option("--debug", is_flag=True, help="Show the traceback of errors.")(wrapper)
