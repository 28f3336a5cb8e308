"""Subcommands of `nn-prune`: one module each, with `add_parser(subparsers)` and a `run(args)`."""
