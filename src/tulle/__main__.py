"""`python -m tulle`: the same as the `tulle` command."""

from tulle.cli.main import run

if __name__ == "__main__":
    run()
