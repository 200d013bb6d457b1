"""`python -m ketch.cli`."""

from ketch.cli import main

main()
