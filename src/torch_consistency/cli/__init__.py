"""The `cm` command: train, sample, eval, export, edit, serve and demo.

User mistakes (bad config values, missing or foreign files, malformed TOML) end with one line on stderr
and exit code 2; nothing is left half-written.
"""

import argparse
import sys

from ..errors import UserInputError


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: `cm train: error: ...`."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> Parser:
    from . import demo, edit, evaluate, export, sample, serve, train

    parser = Parser(
        prog="cm",
        description="Consistency models: train a teacher, distil it (CD) or train from scratch (CT), sample, evaluate.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    for module in (train, sample, evaluate, export, edit, serve, demo):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except UserInputError as error:
        print(f"cm {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
