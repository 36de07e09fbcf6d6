"""`python -m conveyor` and the `conveyor` command: a Ctrl-C while the CLI is still being
imported ends it quietly with 130, as one later does (`conveyor.cli.main`)."""


def main() -> int:
    try:
        from conveyor.cli import main as cli_main
    except KeyboardInterrupt:
        return 130
    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
