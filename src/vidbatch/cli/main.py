"""Entry point of the ``vidbatch`` command."""

from __future__ import annotations

import sys

import typer

try:  # Typer >= 0.20 vendors click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import (  # type: ignore[assignment,no-redef,unused-ignore]
        NoArgsIsHelpError,
        UsageError,
    )

from vidbatch import __version__
from vidbatch.cli.accounts import accounts_app, keys_app
from vidbatch.cli.admin import batches_app, webhooks_app
from vidbatch.cli.common import run, settings_from
from vidbatch.cli.demo import demo
from vidbatch.cli.doctor import doctor
from vidbatch.cli.results import results_app
from vidbatch.cli.serve import serve, worker
from vidbatch.db.engine import make_engine

app = typer.Typer(
    name="vidbatch",
    help="Batch AI video generation: priced, frozen, submitted, followed and settled once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: flags show no "<bool>" as if they took a value.
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(db_app, name="db")
secrets_app = typer.Typer(help="Secrets encrypted at rest.", no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")
app.add_typer(accounts_app, name="accounts")
app.add_typer(keys_app, name="keys")
app.add_typer(batches_app, name="batches")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(results_app, name="results")
app.command("serve")(serve)
app.command("worker")(worker)
app.command("demo")(demo)
app.command("doctor")(doctor)
try:
    from vidbatch.cli.simulator import simulator
except ImportError:  # pragma: no cover - the simulator command arrives with the provider layer
    pass
else:
    app.command("simulator")(simulator)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vidbatch {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    database_url: str | None = typer.Option(
        None, "--database-url", help="Overrides DATABASE_URL (default sqlite:///vidbatch.db)."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Every option can also be set in the environment; see the README's configuration table."""
    ctx.ensure_object(dict)["database_url"] = database_url


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Apply every pending migration."""
    from vidbatch.db.migrate import current_revision, upgrade
    from vidbatch.db.session import describe_db_error, keyed_engine
    from vidbatch.exceptions import DatabaseUnavailable

    settings = settings_from(ctx)

    async def go() -> str | None:
        # The key is needed: migration 0007 encrypts the stored secrets.
        engine = keyed_engine(
            settings.database_url, settings.secret_key, settings.secret_key_previous
        )
        try:
            await upgrade(engine)
            return await current_revision(engine)
        except OSError as exc:
            raise DatabaseUnavailable(f"database unavailable: {describe_db_error(exc)}") from None
        finally:
            await engine.dispose()

    rev = run(go)
    typer.echo(f"database at revision {rev}")


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Print the database's migration revision and the code's newest; exit 1 when the
    database is behind (run `vidbatch db upgrade`)."""
    from vidbatch.db.migrate import current_revision, head_revision

    settings = settings_from(ctx)

    async def go() -> str | None:
        engine = make_engine(settings.database_url)
        try:
            return await current_revision(engine)
        finally:
            await engine.dispose()

    rev = run(go)
    head = head_revision()
    typer.echo(f"database {rev or 'empty'}; code {head}")
    if rev != head:
        typer.echo(
            "error: the database schema is not the code's (behind: run `vidbatch db upgrade`)",
            err=True,
        )
        raise typer.Exit(1)


@secrets_app.command("rotate")
def secrets_rotate(ctx: typer.Context) -> None:
    """Re-encrypt every stored secret under VIDBATCH_SECRET_KEY.

    Set the new key in VIDBATCH_SECRET_KEY and the old one in VIDBATCH_SECRET_KEY_PREVIOUS,
    run this once, then drop VIDBATCH_SECRET_KEY_PREVIOUS.
    """
    from vidbatch.cli.common import call
    from vidbatch.db.secrets import rotate

    settings = settings_from(ctx)
    changed = call(settings, rotate)
    typer.echo(f"re-encrypted {changed} secret(s) under VIDBATCH_SECRET_KEY")


@app.command("audit")
def audit_cmd(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print a JSON list.")
) -> None:
    """Check every money invariant; exit 1 and list the violations if any."""
    from vidbatch.cli.common import print_json, read
    from vidbatch.services.audit import audit

    settings = settings_from(ctx)

    violations = read(settings, lambda conn: audit(conn))
    if as_json:
        print_json([v.__dict__ for v in violations])
    else:
        for v in violations:
            typer.echo(str(v))
        typer.echo("audit: clean" if not violations else f"audit: {len(violations)} violation(s)")
    if violations:
        raise typer.Exit(1)


def main() -> None:
    """Run the CLI; a usage error is one line on stderr and exit code 2, never a traceback."""
    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        sys.exit(2)
    except UsageError as exc:
        where = f" (try '{exc.ctx.command_path} --help')" if exc.ctx else ""
        typer.echo(f"error: {exc.format_message()}{where}", err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("error: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
