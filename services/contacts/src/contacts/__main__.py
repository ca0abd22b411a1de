"""``python -m contacts api|worker|migrate|all|import``."""

from contacts.bootstrap import program
from contacts.entrypoints.cli import import_cli

app = program.cli()
app.command("import", help="Import contacts from a CSV or XLSX file through the API.")(import_cli)
app()
