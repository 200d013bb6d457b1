"""User apps that tests deploy (imported as `supports.<name>`)."""
