"""`lysep` command line (python -m lysep)."""
import argparse
import sys

from ._cli_model import add_commands


def main(argv=None):
    parser = argparse.ArgumentParser(prog="lysep", description="Layer separation training.")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
