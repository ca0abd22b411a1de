"""``python -m whatsapp api|worker|migrate|all``."""

from whatsapp.bootstrap import program

program.cli()()
