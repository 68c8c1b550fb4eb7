"""`python -m fnn ...`: the command line of `fnn.cli`."""

from .cli import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())
