"""`python -m logd` is the `logd` command."""

from logd.cli.main import main

main()
