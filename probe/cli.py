"""Pieces shared by the command-line modules probe.run, probe.report and probe.npmi.

Public names:
    UsageError       invalid arguments or input; a CLI prints the message and exits with EXIT_USAGE
    ArgumentParser   argparse's parser, exiting with EXIT_USAGE on its own usage errors
    EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED   the exit codes every CLI uses
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["UsageError", "ArgumentParser", "EXIT_RUNTIME", "EXIT_USAGE", "EXIT_INTERRUPTED"]

EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class UsageError(Exception):
    """Invalid arguments or input; the CLI prints the message and exits with code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors exit with EXIT_USAGE after one error line."""

    def error(self, message: str) -> None:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message}\n")
