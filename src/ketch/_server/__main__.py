"""`python -m ketch._server`: run the server in the foreground."""

from ketch._server.main import main

main()
