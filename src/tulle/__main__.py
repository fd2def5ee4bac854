"""`python -m tulle`: the same entry point as the `tulle` console script."""

from tulle.cli.main import run

if __name__ == "__main__":
    run()
