from trainer.cli import cli

raise SystemExit(cli())
