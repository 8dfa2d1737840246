"""Subcommands of the ``loglik`` CLI beyond info and bench. Each module defines ``HELP``,
``add_arguments(parser)`` and ``main(args) -> int``; ``COMMANDS`` lists them for loglik.cli."""

COMMANDS: dict[str, str] = {
    "cluster": "loglik.commands.cluster",
    "denoise": "loglik.commands.denoise",
    "eels": "loglik.commands.eels",
}
