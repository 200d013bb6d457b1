"""The management API: the FastAPI application (core.py) and its routers, each a module."""
