"""One module per ``dope`` sub-command: ``add_arguments(parser)`` and ``run(args) -> exit code``."""
