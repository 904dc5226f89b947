"""The command line's inputs: the manifest and the logins it was given (URLs, or the environment's)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape

from ..api import SpecError, VectorMigration, load_manifest
from ..database.sql import ConnectionError_, ConnectionParams, parse_database_url

DATABASE_URL_ENV = "DATABASE_URL"
ADMIN_DATABASE_URL_ENV = "ADMIN_DATABASE_URL"
TARGET_DATABASE_URL_ENV = "TARGET_DATABASE_URL"


@dataclass(frozen=True)
class Loaded:
    """The manifest and the logins the command line was given."""

    resource: VectorMigration
    params: ConnectionParams
    admin: ConnectionParams | None  # the same server's admin login
    target_server: ConnectionParams | None  # replicate.target's server (--target-database-url)


def load(args: argparse.Namespace, console: Console) -> Loaded | None:
    """The manifest, the database's parameters, the admin login's and the target server's, or None after an error."""
    try:
        resource = load_manifest(args.file)
    except SpecError as error:
        console.print(f"[red]error:[/] {escape(str(error))}")
        return None
    url = args.database_url or os.environ.get(DATABASE_URL_ENV)
    if not url:
        console.print(f"[red]error:[/] give --database-url or set {DATABASE_URL_ENV}")
        return None
    admin_url = args.admin_database_url or os.environ.get(ADMIN_DATABASE_URL_ENV)
    target_url = args.target_database_url or os.environ.get(TARGET_DATABASE_URL_ENV)
    spec = resource.spec
    if target_url and spec.replicate.target is None:
        # The manifest says that the database moves to another server (the operator and kubectl read
        # the same file); the URL says which, as the Secret does under the operator.
        console.print("[red]error:[/] --target-database-url: the manifest has no spec.replicate.target")
        return None
    if spec.replicate.target is not None and not target_url:
        console.print(
            f"[red]error:[/] spec.replicate.target: give the other server as --target-database-url "
            f"or {TARGET_DATABASE_URL_ENV}"
        )
        return None
    try:
        params = parse_database_url(url, spec.database.ssl_mode)
        admin = parse_database_url(admin_url, spec.database.ssl_mode) if admin_url else None
        target_server = parse_database_url(target_url, spec.database.ssl_mode) if target_url else None
    except ConnectionError_ as error:
        console.print(f"[red]error:[/] {escape(str(error))}")
        return None
    if admin is not None:
        if not admin.user or not params.user:
            console.print("[red]error:[/] --admin-database-url and --database-url must both name their user")
            return None
        admin = params.with_login(admin.user, admin.password)
    return Loaded(resource, params, admin, target_server)
