"""`python -m ketch._runtime`: the process inside every container."""

from ketch._runtime.entry import main

main()
