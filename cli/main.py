"""The ``srp-np`` command.

Every subcommand turns :class:`srp_np.errors.SrpError` (and a few common
user mistakes) into one line on stderr and exit status 2: no tracebacks for
bad input.
"""
from __future__ import annotations

import re
import sys

import click

from srp_np.errors import SrpError


_PARAM = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def _flags(group) -> dict:
    """Parameter name → its long flag, over every command of the CLI (``data_dir`` → ``--data-dir``)."""
    out = {}
    stack = [group]
    while stack:
        cmd = stack.pop()
        for p in getattr(cmd, "params", ()):
            if isinstance(p, click.Option):
                out.setdefault(p.name, max(p.opts, key=len))
        stack.extend(getattr(cmd, "commands", {}).values())
    return out


#: Library parameters whose flag has another name.
ALIASES = {"n_in": "--inputs", "use_metadata": "--ignore-metadata"}


def cli_terms(msg, group=None) -> str:
    """A library message in the CLI's terms: the library names its parameters in backticks
    (`` `tau` ``); here they become the flags that set them (``--tau``), or the bare name."""
    flags = {**_flags(group), **ALIASES} if group is not None else {}
    return _PARAM.sub(lambda m: flags.get(m.group(1), m.group(1)), str(msg))


def _one_line(msg) -> str:
    """``msg`` on one printable line: control characters (a newline or an ANSI escape inside a
    model's op name, say) are shown escaped, never sent to the terminal raw."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in " ".join(str(msg).split("\n")))


class SrpGroup(click.Group):
    """A click group with one error path for the whole CLI.

    * A user error (bad input, a bad option, including click's own usage errors)
      prints one line ``error: ...`` on stderr and exits with status 2.
    * An internal error exits with status 1 and a short line asking to report
      it (``SRP_NP_DEBUG=1`` shows the traceback).
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        import os
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except click.ClickException as e:
            click.echo(f"error: {_one_line(e.format_message())}", err=True)
            sys.exit(2)
        except SrpError as e:
            click.echo(f"error: {_one_line(cli_terms(e, self))}", err=True)
            sys.exit(2)
        except Exception as e:  # an internal error: a bug, not bad input
            if os.environ.get("SRP_NP_DEBUG"):
                raise
            click.echo(f"internal error: {type(e).__name__}: {_one_line(e)} (this is a bug in srp-np: please "
                       "report it with the command line; SRP_NP_DEBUG=1 shows the traceback)", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SrpError as e:
            click.echo(f"error: {_one_line(cli_terms(e, self))}", err=True)
            ctx.exit(2)
        except MemoryError:
            click.echo("error: out of memory: try fewer images at once (--batch-size where the command has it) "
                       "or a smaller τ+T", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=SrpGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="srp-np")
def cli():
    """srp-np: see exactly what a converted spiking network does, on a CPU.

    Event-driven simulation of QCFS ANNs converted to integrate-and-fire SNNs,
    with the two-stage residual-membrane-potential inference (SRP) of
    Hao et al., AAAI 2023.
    """


def _register():
    # every subcommand module keeps torch imports inside its command bodies
    from .analysis_cmds import register as register_analysis
    from .run_cmd import run_cmd
    from .train_cmds import export_cmd, train_cmd

    cli.add_command(run_cmd, "run")
    cli.add_command(train_cmd, "train")
    cli.add_command(export_cmd, "export")
    register_analysis(cli)
    from .nir_cmds import nir_group          # NIR export/import (extra [nir]; nir imported lazily)
    cli.add_command(nir_group, "nir")
    from .verify_cmd import verify_cmd
    cli.add_command(verify_cmd, "verify")
    from .dist_cmds import register as register_dist     # merge (issue 12)

    register_dist(cli)


_register()


def main(argv=None):
    """Console-script entry point."""
    return cli.main(args=argv, prog_name="srp-np")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
