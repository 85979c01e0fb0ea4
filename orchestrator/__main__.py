"""``python -m orchestrator …`` runs the CLI."""

from orchestrator.cli.main import main

# Guarded: process-isolation children are started with forkserver, which imports __main__.
if __name__ == "__main__":
    main()
