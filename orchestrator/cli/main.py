"""The ``orchestrator`` command group: settings and logging once, then one subcommand, imported lazily.

Subcommands live in ``cli.serve`` (api, worker, dispatcher, keys), ``cli.dev`` (dev, bench),
``cli.runs`` (run, runs), ``cli.flows`` and ``cli.webhooks``; a subcommand's module is imported only when that
subcommand runs, so ``orchestrator --help`` does not load Starlette, arq or aiohttp.
"""

from __future__ import annotations

import importlib

import click

# name -> (module, attribute, one-line help shown by --help without importing the module)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "api": ("orchestrator.cli.serve", "api", "Serve the HTTP API."),
    "worker": ("orchestrator.cli.serve", "worker", "Run an arq worker that executes runs."),
    "dispatcher": ("orchestrator.cli.serve", "dispatcher", "Deliver webhooks (run any number)."),
    "keys": ("orchestrator.cli.serve", "keys", "Manage API keys."),
    "dev": ("orchestrator.cli.dev", "dev", "Run everything on this machine (embedded Redis)."),
    "bench": ("orchestrator.cli.dev", "bench", "Measure throughput and latency against raw arq and aiohttp."),
    "flows": ("orchestrator.cli.flows", "flows", "List the flows the API serves; show one's schemas."),
    "run": ("orchestrator.cli.runs", "run", "Start an execution of a flow."),
    "runs": ("orchestrator.cli.runs", "runs", "Read, list, wait for and cancel executions."),
    "webhooks": ("orchestrator.cli.webhooks", "webhooks_group", "Manage webhook endpoints and deliveries."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use (click's documented lazy-loading pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every subcommand name, without importing any."""
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import and return one subcommand."""
        found = COMMANDS.get(cmd_name)
        if found is None:
            return None
        module, attr, _ = found
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List subcommands with their short help, read from COMMANDS (no import)."""
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.version_option(package_name="webhook-orchestrator")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Run flows on arq and report every status change by signed webhooks."""
    from orchestrator.settings import ConfigurationError, Settings

    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:  # a bad ORCH_* value: one line naming it (never its value), exit 2
        click.echo(f"error: bad configuration: {exc}", err=True)
        ctx.exit(2)
    from orchestrator.logs import configure

    configure(level=settings.log_level, fmt=settings.log_format)
    ctx.obj = settings
