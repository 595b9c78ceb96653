"""The ``srp-np`` command.

Every subcommand turns :class:`srp_np.errors.SrpError` (and a few common
user mistakes) into one line on stderr and exit status 2: no tracebacks for
bad input.
"""
from __future__ import annotations

import sys

import click

from srp_np.errors import SrpError


class SrpGroup(click.Group):
    """A click group that reports user errors as one line instead of a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SrpError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(2)
        except MemoryError:
            click.echo("error: out of memory: try a smaller --batch-size", err=True)
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


_register()


def main(argv=None):
    """Console-script entry point."""
    return cli.main(args=argv, prog_name="srp-np")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
