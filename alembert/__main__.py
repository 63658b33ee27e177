"""`python -m alembert CMD ...`: the console script without its installed wrapper."""

from alembert.cli import main

if __name__ == "__main__":
    main()
