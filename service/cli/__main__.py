"""`python -m service.cli`: the `mailprov` command."""

from service.cli.main import main

main()
