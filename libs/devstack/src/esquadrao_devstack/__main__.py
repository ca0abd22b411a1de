"""``python -m esquadrao_devstack``: the ``esquadrao-stack`` command."""

from esquadrao_devstack.cli import app

app(prog_name="esquadrao-stack")
