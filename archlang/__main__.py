"""`python -m archlang` runs the `archc` command line."""

from archlang.cli import main

main()
