"""`python -m flows.cli`: the same as the `trainflow` command."""

from flows.cli import main

main()
