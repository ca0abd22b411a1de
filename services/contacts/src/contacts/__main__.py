"""``python -m contacts api|worker|migrate|all``."""

from contacts.bootstrap import program

program.cli()()
