"""`python -m tunesmith ...`: the `tunesmith` command (what `accelerate launch -m tunesmith` runs on each process)."""

from tunesmith.cli.main import main

main()
