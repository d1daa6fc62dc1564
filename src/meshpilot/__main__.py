"""`python -m meshpilot`: the same as the `meshpilot` command."""

from meshpilot.cli import main

main()
