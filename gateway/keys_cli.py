"""`flowgate keys ...`: manage API keys in the store the server reads (Redis with FLOWGATE_REDIS_URL,
else FLOWGATE_KEYS_FILE / $FLOWGATE_HOME/keys.json). The secret is printed once, at creation."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import msgspec
import typer

from gateway.auth.config import AuthConfig
from gateway.auth.keys import KeyRecord, Limits, ToolChoiceDefault, load_pepper, mint
from gateway.auth.store import FileKeyStore, enroll_embedded_worker

keys_app = typer.Typer(help="API keys: create, list, revoke, change tier, read usage.", no_args_is_help=True)
Tier = typer.Option(help="paid | free | batch")


def _run(work):
    """Run `work(store, config, redis)` against the configured store."""
    from gateway.auth.service import key_store, redis_client

    config = AuthConfig.from_env()

    async def main():
        redis = redis_client(config.redis_url) if config.redis_url else None
        try:
            return await work(key_store(config, redis), config, redis)
        finally:
            if redis is not None:
                await redis.aclose()

    return asyncio.run(main())


def _check_tier(tier: str) -> str:
    if tier not in ("paid", "free", "batch"):
        raise typer.BadParameter("tier must be paid, free or batch")
    return tier


def _check_callback_url(url: str | None) -> str | None:
    """As a job's own callback_url is checked (the FLOWGATE_WEBHOOK_* settings of this environment)."""
    if url is None:
        return None
    from workers.config import WorkerSettings
    from workers.webhooks import BlockedDestination, check_url

    try:
        check_url(url, WorkerSettings.from_env(), resolve=False)
    except BlockedDestination as exc:
        raise typer.BadParameter(str(exc)) from exc
    return url


@keys_app.command("create")
def create(
    tier: Annotated[str, Tier] = "free",
    name: Annotated[str | None, typer.Option(help="A label shown in `keys list`")] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute (default: the tier's)")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute (default: the tier's)")] = None,
    max_concurrent: Annotated[int | None, typer.Option(help="Requests in flight at once")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Cap on a request's max_tokens")] = None,
    models: Annotated[str | None, typer.Option(help="Comma-separated models this key may use")] = None,
    tenant: Annotated[str | None, typer.Option(help="Keys with one tenant share cached prompts")] = None,
    tool_choice_default: Annotated[ToolChoiceDefault | None, typer.Option(
        help="required_first_turn for n8n agents")] = None,
    callback_url: Annotated[str | None, typer.Option(
        help="Webhook for this key's jobs and batches that name no callback_url")] = None,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create a key and print its secret (shown this once; only a hash is stored)."""
    _check_tier(tier)
    _check_callback_url(callback_url)

    async def work(store, config, _redis):
        pepper = load_pepper(config.pepper_file)
        key, record = mint(
            pepper, tier, name=name, tenant=tenant, tool_choice_default=tool_choice_default,
            callback_url=callback_url,
            limits=Limits(rpm=rpm, tpm=tpm, max_concurrent=max_concurrent, max_tokens=max_tokens),
            models=models.split(",") if models else None)
        await store.put(record)
        if isinstance(store, FileKeyStore):  # a `flowgate serve` on this file may run its worker: keep it working
            await enroll_embedded_worker(store, pepper)
        return key, record

    key, record = _run(work)
    if json:
        typer.echo(msgspec.json.encode({"key": key, "key_id": record.key_id, "tier": record.tier}).decode())
    else:
        typer.echo(f"key id: {record.key_id} (tier {record.tier})\nsecret: {key}\n"
                   "Store the secret now: it cannot be shown again.")


@keys_app.command("list")
def list_keys(json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every key (ids, tiers, limits; never secrets or hashes)."""
    records: dict[str, KeyRecord] = _run(lambda store, *_: store.load())
    rows = [msgspec.structs.replace(r, key_hash="") for r in sorted(records.values(), key=lambda r: r.created_at)]
    if json:
        typer.echo(msgspec.json.encode([{k: v for k, v in msgspec.to_builtins(r).items() if k != "key_hash"}
                                        for r in rows]).decode())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("key id", "tier", "name", "enabled", "limits", "models", "tenant", "callback url")
    for r in rows:
        limits = ", ".join(f"{k}={v}" for k, v in msgspec.to_builtins(r.limits).items()) or "tier defaults"
        table.add_row(r.key_id, r.tier, r.name or "", "yes" if r.enabled else "revoked", limits,
                      ",".join(r.models) if r.models else "all", r.tenant or "", r.callback_url or "")
    Console().print(table)


def _update(key_id: str, **changes) -> KeyRecord:
    async def work(store, *_):
        record = (await store.load()).get(key_id)
        if record is None:
            raise typer.BadParameter(f"no key with id {key_id}")
        record = msgspec.structs.replace(record, **changes)
        await store.put(record)
        return record

    return _run(work)


@keys_app.command("revoke")
def revoke(key_id: str) -> None:
    """Disable a key; every replica refuses it within a second."""
    _update(key_id, enabled=False)
    typer.echo(f"revoked {key_id}")


@keys_app.command("set-tier")
def set_tier(key_id: str, tier: str) -> None:
    """Move a key to another tier (paid | free | batch)."""
    _update(key_id, tier=_check_tier(tier))
    typer.echo(f"{key_id} is now {tier}")


@keys_app.command("set-callback-url")
def set_callback_url(key_id: str, url: Annotated[str | None, typer.Argument(
        help="Omit to remove the key's default")] = None) -> None:
    """The webhook for this key's jobs and batches that name no callback_url themselves."""
    _update(key_id, callback_url=_check_callback_url(url))
    typer.echo(f"{key_id}: default callback_url {url}" if url else f"{key_id}: no default callback_url")


@keys_app.command("usage")
def usage(
    url: Annotated[str | None, typer.Option(help="Read a server's /admin/usage (with FLOWGATE_ADMIN_KEY) "
                                                 "instead of Redis; needed without Redis")] = None,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Requests, prompt / cached / completion tokens and errors per key and per tier."""
    if url:
        import httpx

        response = httpx.get(f"{url.rstrip('/')}/admin/usage", timeout=30,
                             headers={"authorization": f"Bearer {os.environ.get('FLOWGATE_ADMIN_KEY', '')}"})
        response.raise_for_status()
        rows = response.json()
    else:
        from gateway.auth.usage import UsageLedger

        async def work(_store, config, redis):
            if redis is None:
                raise typer.BadParameter("without FLOWGATE_REDIS_URL the ledger lives in the server: pass --url")
            return await UsageLedger(redis, config.redis_prefix).read()

        rows = _run(work)
    if json:
        typer.echo(msgspec.json.encode(rows).decode())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("row", "requests", "prompt", "cached", "completion", "errors")
    for name, row in rows.items():
        errors = ", ".join(f"{k.removeprefix('errors_')}: {v}" for k, v in row.items() if k.startswith("errors_"))
        table.add_row(name, *(str(row[f]) for f in ("requests", "prompt_tokens", "cached_tokens",
                                                    "completion_tokens")), errors)
    Console().print(table)
