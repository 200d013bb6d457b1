"""Typed contracts between the parts: the function spec and the call-protocol messages."""
