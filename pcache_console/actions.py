"""The console's operator actions: each is a dialog, one admin call, and a line in the flash.

Every dialog opens with the focus on Cancel; cancelling sends nothing. Failures (router away,
request refused) are flashed, never raised: the console keeps running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from rich.text import Text

from pcache.api import BlastRadius, PinIn, PrefixRow, PrewarmIn, PrewarmJob
from pcache.client import AdminClient, AdminError, RouterUnreachable
from pcache.drain_capacity import DrainCapacity
from pcache_console.screens.confirm import ConfirmScreen
from pcache_console.screens.forms import PinForm, PinScreen, PrewarmForm, PrewarmScreen
from pcache_console.widgets.heatmap import prefix_label

if TYPE_CHECKING:
    from pcache_console.app import TopApp

__all__ = ["blast_radius_text", "drain", "pin", "prewarm", "undrain", "unpin"]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def blast_radius_text(radius: BlastRadius, capacity: DrainCapacity | None = None) -> Text:
    """What a drain of ``radius.replica`` touches, one line per kind of thing, then whether the
    replicas that take its work have room."""
    text = Text()
    text.append(f"{radius.replica}", style="bold")
    text.append(f" is {radius.state}.\n")
    text.append(f"• {_count(radius.in_flight, 'request')} in flight will finish there\n")
    text.append(f"• {_count(radius.sessions, 'session')} homed there will move to their next choice\n")
    if radius.tier1:
        text.append("• Tier-1 prefixes re-homed (prewarmed on their successors first):\n")
        for move in radius.tier1:
            text.append(f"    {move.prefix} → {', '.join(move.successors) or 'nowhere'}\n")
    else:
        text.append("• no Tier-1 prefix is owned or pinned there\n")
    if radius.last_routable:
        text.append("⚠ it is the LAST routable replica: new requests will fail\n", style="bold red")
    if capacity is not None:
        text.append(f"• {capacity.summary()}\n")
        for warning in capacity.warnings:
            text.append(f"⚠ {warning}\n", style="bold yellow")
    return text


async def _attempt(app: TopApp, what: str, call: Callable[[], object]) -> object | None:
    """Await one admin call; on failure flash why and return ``None``."""
    try:
        result = call()
        return await result if asyncio.iscoroutine(result) else result
    except RouterUnreachable as exc:
        app.flash(f"{what} failed: {exc}", error=True)
    except AdminError as exc:
        app.flash(f"{what} refused: {exc}", error=True)
    except ValueError as exc:  # an answer that is not the API's JSON
        app.flash(f"{what}: unreadable answer from the router: {str(exc).splitlines()[0]}", error=True)
    return None


async def drain(app: TopApp, client: AdminClient, name: str) -> None:
    """Dry run for the blast radius, the dialog, then the drain (forced only past the warning)."""
    app.flash(f"checking what draining {name} would touch…")
    radius = await _attempt(app, "drain dry-run", lambda: client.blast_radius(name))
    if not isinstance(radius, BlastRadius):
        return
    latest = [radius]

    async def recompute() -> Text | None:
        """The blast radius and capacity now (the dialog shows them live while it is open)."""
        try:
            latest[0] = await client.blast_radius(name)
        except (AdminError, ValueError):
            return None  # keep the last answer; the header says the router is away
        return blast_radius_text(latest[0], app.drain_capacity(name))

    body = blast_radius_text(radius, app.drain_capacity(name))
    confirm = ConfirmScreen(
        f"Drain {name}?", body, f"Drain {name}", recompute=recompute, every_s=app.refresh_s
    )
    if not await app.push_screen_wait(confirm):
        app.flash(f"drain of {name} cancelled; nothing sent")
        return
    # The operator saw the last-routable warning in the dialog: confirming it is the force.
    force = latest[0].last_routable
    done = await _attempt(app, "drain", lambda: client.drain(name, force=force))
    if isinstance(done, BlastRadius):
        handover = done.handover
        if handover is not None and not handover.complete:
            failed = "; ".join(f"{p.prefix} on {p.replica}: {p.error or 'failed'}" for p in handover.failed)
            unfinished = f"; {handover.unfinished} still warming" if handover.unfinished else ""
            app.flash(
                f"{name} is {done.state}, but handover prewarm {handover.job} warmed only "
                f"{handover.ok}/{handover.total} pairs: {failed}{unfinished}",
                error=True,
            )
        else:
            job = f", prewarm job {done.prewarm_job} ok" if done.prewarm_job else ""
            app.flash(f"{name} is {done.state}: {done.sessions} sessions moving{job}")
        app.poll_now()


async def undrain(app: TopApp, client: AdminClient, name: str, state: str | None) -> None:
    """The dialog (what undraining changes), then the undrain."""
    body = Text(f"{name} ({state or 'unknown state'}) will take new sessions again;\n")
    body.append("sessions whose HRW first choice it is will come back to it.")
    confirm = ConfirmScreen(f"Undrain {name}?", body, f"Undrain {name}", danger=False)
    if not await app.push_screen_wait(confirm):
        app.flash(f"undrain of {name} cancelled; nothing sent")
        return
    done = await _attempt(app, "undrain", lambda: client.undrain(name))
    if done is not None:
        app.flash(f"{name} is {getattr(done, 'state', 'undrained')}")
        app.poll_now()


async def pin(app: TopApp, client: AdminClient, row: PrefixRow, default_replicas: list[str]) -> None:
    """The pin form (replicas, the prefix's text from a file), then the pin."""
    form = await app.push_screen_wait(PinScreen(row, default_replicas))
    if not isinstance(form, PinForm):
        app.flash(f"pin of {prefix_label(row)} cancelled; nothing sent")
        return
    pin = PinIn(text=form.text, replicas=form.replicas)
    done = await _attempt(app, "pin", lambda: client.pin(form.name, pin))
    if done is not None:
        app.flash(f"pinned {form.name} to {', '.join(form.replicas)}")
        app.poll_now()


async def unpin(app: TopApp, client: AdminClient, row: PrefixRow) -> None:
    """The dialog (where its sessions go), then the unpin."""
    if row.kind != "pinned" or row.name is None:
        app.flash(f"{prefix_label(row)} is not pinned", error=True)
        return
    name = row.name
    body = Text(f"{name} is pinned to {', '.join(row.owners) or '-'}.\n")
    body.append(f"Its {row.sessions} sessions go back to the prefix's HRW top-k replicas.")
    if not await app.push_screen_wait(ConfirmScreen(f"Unpin {name}?", body, f"Unpin {name}")):
        app.flash(f"unpin of {name} cancelled; nothing sent")
        return
    if await _attempt(app, "unpin", lambda: client.unpin(name)) is not None:
        app.flash(f"unpinned {name}")
        app.poll_now()


async def prewarm(app: TopApp, client: AdminClient, row: PrefixRow | None) -> None:
    """The form, a dry run whose plan the dialog shows, then the job, followed to its end."""
    form = await app.push_screen_wait(PrewarmScreen(row))
    if not isinstance(form, PrewarmForm):
        app.flash("prewarm cancelled; nothing sent")
        return
    request = PrewarmIn(prefixes=form.prefixes, copies=form.copies, dry_run=True)
    plan = await _attempt(app, "prewarm plan", lambda: client.prewarm(request))
    if not isinstance(plan, PrewarmJob):
        return
    body = Text(f"{plan.total} (prefix, replica) pairs:\n")
    for entry in plan.plan[:12]:
        body.append(f"• {entry.prefix} → {', '.join(entry.replicas)} ({entry.why})\n")
    if len(plan.plan) > 12:
        body.append(f"… and {len(plan.plan) - 12} more\n", style="dim")
    if not await app.push_screen_wait(ConfirmScreen("Run this prewarm?", body, "Prewarm", danger=False)):
        app.flash("prewarm cancelled; nothing sent")
        return
    run = request.model_copy(update={"dry_run": False})
    job = await _attempt(app, "prewarm", lambda: client.prewarm(run))
    while isinstance(job, PrewarmJob) and job.state in ("planned", "running"):
        app.flash(f"prewarm {job.id}: {job.done}/{job.total} done, {job.failed} failed…")
        await asyncio.sleep(0.5)
        job = await _attempt(app, "prewarm status", partial(client.prewarm_job, job.id))
    if isinstance(job, PrewarmJob):
        app.flash(
            f"prewarm {job.id} {job.state}: {job.done}/{job.total} done, {job.failed} failed",
            error=job.state == "failed" or job.failed > 0,
        )
        app.poll_now()
