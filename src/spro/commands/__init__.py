"""Sub-commands of the `spro` CLI; see `spro.cli.COMMANDS`."""
