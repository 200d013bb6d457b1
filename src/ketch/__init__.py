"""ketch."""
