"""``python -m lmforge.cli``: the same as the ``lmforge`` command."""

from lmforge.cli.app import main

main()
