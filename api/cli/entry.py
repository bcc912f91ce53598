"""The `repobuild` console script: the container commands first, without importing the rest of the app.

`repobuild worker` and `repobuild flower` exec Celery (which imports the app itself), and `repobuild probe` runs every
few seconds in each container, so neither should pay for importing the pipeline first (about 5 s and 60 MB on a
small machine). Every other command is api/cli/main.py's.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else ""
    if command in ("worker", "flower"):
        from api.cli.celery_exec import exec_celery  # noqa: PLC0415

        return exec_celery(command, argv[1:])
    if command == "probe":
        import argparse  # noqa: PLC0415

        from api.cli import probe  # noqa: PLC0415

        parser = argparse.ArgumentParser(prog="repobuild")
        probe.add_parser(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(argv)
        return int(args.func(args))
    from api.cli.main import main as full_main  # noqa: PLC0415

    return full_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
