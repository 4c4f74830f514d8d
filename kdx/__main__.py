"""``python -m kdx`` (also what torchrun launches) runs the ``kdx`` command."""

from kdx.cli import main

if __name__ == "__main__":
    main()
