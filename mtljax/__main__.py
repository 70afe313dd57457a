"""`python -m mtljax` is the `mtljax` console script."""

from mtljax.cli import main

if __name__ == "__main__":
  raise SystemExit(main())
