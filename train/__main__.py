"""``python -m srp_np.train {train,export} ...``: the same commands as ``srp-np train``
/ ``srp-np export`` (useful before the package's entry point is installed)."""
import click

from srp_np.cli.train_cmds import export_cmd, train_cmd


@click.group()
def main():
    """QCFS training and export (PyTorch)."""


main.add_command(train_cmd)
main.add_command(export_cmd)

if __name__ == "__main__":
    main()
