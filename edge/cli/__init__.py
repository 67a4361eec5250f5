"""The `python -m edge` subcommands, each imported only when it runs."""
