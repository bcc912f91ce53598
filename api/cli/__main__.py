"""`python -m api.cli`: the same command as `repobuild`."""
from api.cli.entry import main

if __name__ == "__main__":
    raise SystemExit(main())
