"""The ledger every instance shares, in Table Storage.

Each instance keeps its own exact windows (LocalLedger); what the others used comes from the table,
in three kinds of rows, each with one writer:

- pulse (pulse.py): per writer (one process), its charges of the recent 10-second slots of every
  window key (hosts and clients alike), the limits it was asked about and its real tokens today per
  (client, deployment); rewritten whole every flush while anything of it is in the window, then once
  more marked final;
- summary (summary.py): every pulse summed, written about once a second by the one writer holding the
  lease (lease.py), read by every instance: an instance's reads do not grow with the number of instances;
- usage rows (usage_rows.py): per (day, writer, client, deployment) cumulative real usage, the exact
  record /usage sums.

Nothing on the request path touches storage: reserve, settle and release change memory only, and the
background loops (flush; summary read or write) each survive any failure and never wait on each
other. A new instance admits a small share of each window until it has read its first summary. What
the others cannot know about an instance it may not take: while its pulse cannot be written, or no
new summary comes, it keeps to what the table last said of it (or a fair part of the limit).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import date
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables.aio import TableClient

from shared import lease, pulse, summary, usage_rows
from shared.clock import Clock
from shared.lease import Lease
from shared.ledger import HostUsage, LocalLedger, Reservation, TokenUsage, UsageKey, UsageRecord, utc_day
from shared.peer_view import PeerView
from shared.recent_usage import SLOT, SLOTS_KEPT, RecentUsage, slot_of
from shared.storage import ensure_table, permanent, quote_key, shard
from shared.storage_health import StorageHealth
from shared.summary import Summary
from shared.usage_rows import UsageRows

log = logging.getLogger("gateway")
MAX_BACKOFF_SECONDS = 10.0
LEASE_CYCLES = 5  # a leader that missed this many summaries has lost the lease
STALE_CYCLES, STALE_SECONDS = 3, 0.5  # a summary or pulse older than both (real seconds) is no longer news
MIN_LEASE_SECONDS = 1.0  # real: a busy process's pause must not pass the lease around
COLD_SHARE = 0.1  # of each window a new instance may fill before it knows what the others use
WARMUP_LIMIT_CYCLES = 10  # no summary by then (storage away since start): go on with the local view
PHASE = 0.25  # of a read interval: when, after the leader began a summary, it has landed (reads follow it)
SWEEP_LIMIT = 20  # finished pulses deleted per summary
CLOSE_TIMEOUT_SECONDS = 5.0  # real seconds the last flush may take at shutdown
SKEW_SECONDS = 0.05  # real seconds two instances' wall clocks may differ by (NTP keeps Azure's far closer)


class TableLedger:
    """LocalLedger plus the shared rows; same interface, so the router cannot tell them apart."""

    def __init__(
        self,
        client: TableClient,
        clock: Clock,
        instance_id: str,
        *,
        window_seconds: float = 60.0,
        request_window_seconds: float = 10.0,
        expiry_margin_seconds: float = 0.1,
        flush_interval: float = 1.0,
        read_interval: float = 1.0,
        health: StorageHealth | None = None,
        incarnation: str | None = None,
    ) -> None:
        self._client = client
        self._clock = clock
        self.writer = f"{quote_key(instance_id)}.{incarnation or secrets.token_hex(4)}"
        self._flush_interval = flush_interval
        self._read_interval = read_interval
        self._window_seconds = window_seconds
        self._request_window_seconds = request_window_seconds
        self._skew = SKEW_SECONDS / clock.to_real(1.0)  # in clock seconds
        self._stale_after = max(STALE_CYCLES * max(read_interval, flush_interval), STALE_SECONDS / clock.to_real(1.0))
        self._lease_seconds = max(LEASE_CYCLES * read_interval, MIN_LEASE_SECONDS / clock.to_real(1.0))
        # Spread who tries first when a lease runs out, so that not every instance reads every pulse at once.
        self._takeover_delay = shard(self.writer, 1000) / 1000 * 2 * read_interval
        self.health = health or StorageHealth(clock)
        self._view = PeerView(
            clock,
            window_seconds=window_seconds,
            request_window_seconds=request_window_seconds,
            flush_interval=flush_interval,
            skew=self._skew,
        )
        self._local = LocalLedger(
            clock,
            window_seconds=window_seconds,
            request_window_seconds=request_window_seconds,
            expiry_margin_seconds=expiry_margin_seconds,
            shared=self._view,
        )
        self._slots: dict[str, dict[int, list[int]]] = {}  # key -> slot -> [charged, requests]
        self._limits: dict[str, tuple[float, float]] = {}  # key -> (tpm, requests per window) as last asked
        self._version = 0  # bumped by every change to the slots or records
        self._pulsed = 0  # the version the table's pulse shows
        self._pulse_seq = 0
        self._pulse_chunks = 0
        self._closing = False
        self._published: pulse.Pulse | None = None  # our last pulse in the table: what the others count of us
        self._pulse_failing = False
        self._usage = UsageRows(self.writer)
        self._lease = Lease()
        self._summary_seq = 0
        self._summary_chunks = 0
        self._copies = 1  # partitions the summary was last written to
        self._started = clock.now()
        self._warm = False
        self._late = False  # the last summary read found no newer summary
        self.dropped_items = 0  # keys left out of a full pulse or summary
        self.writes = 0  # table transactions and the entities they carried, for /status and the tests
        self.reads = 0
        self.entities_written = 0
        self.entities_read = 0
        self.terms = 0  # times this writer took the lease

    # -- the Ledger interface ------------------------------------------------------------------
    def reserve(self, keys: tuple[str, ...], tokens: int, *, prompt: int, client: str, deployment: str) -> Reservation:
        reservation = self._local.reserve(keys, tokens, prompt=prompt, client=client, deployment=deployment)
        reservation.slot = slot_of(self._clock.wall())
        self._charge(reservation, tokens, 1)
        return reservation

    def settle(self, reservation: Reservation, used: TokenUsage | None) -> None:
        if reservation.state != "open":
            return
        self._local.settle(reservation, used)
        extra = 0 if used is None else max(0, used.total - reservation.tokens)
        self._charge(reservation, extra, 0)  # also marks the records changed

    def release(self, reservation: Reservation) -> None:
        if reservation.state != "open":
            return
        self._local.release(reservation)
        self._charge(reservation, -reservation.tokens, -1)

    def _charge(self, reservation: Reservation, tokens: int, requests: int) -> None:
        self._version += 1
        for key in reservation.keys:
            counts = self._slots.setdefault(key, {}).setdefault(reservation.slot, [0, 0])
            counts[0] += tokens
            counts[1] += requests

    def observe(self, reservation: Reservation, remaining_tokens: int | None, remaining_requests: int | None) -> None:
        self._local.observe(reservation, remaining_tokens, remaining_requests)

    def surprised(self, key: str, requests: bool, retry_after: float | None) -> None:
        self._local.surprised(key, requests, retry_after)

    def headroom(self, key: str, tpm: int, rpm: int) -> tuple[float, float]:
        if self._cold():
            # Before the first summary this instance cannot know what the others use: a small share only.
            return self._local.headroom(key, math.ceil(tpm * COLD_SHARE), math.ceil(rpm * COLD_SHARE))
        self._limits[key] = (tpm, self._local.request_limit(rpm))
        tokens, requests = self._local.headroom(key, tpm, rpm)
        # What the others cannot know about us we may not take: while our pulse cannot be written, keep to
        # what the last one said; while no new summary comes, to what the last summary said of us.
        if self._pulse_failing and self._published is not None:
            left = self._share_left(self._published.usage, self._published.at, key)
            tokens, requests = min(tokens, left[0]), min(requests, left[1])
        if self._view.seq >= 0 and self._view.age() > self._stale_after:
            left = self._share_left(self._view.seen, self._view.read_start, key)
            tokens, requests = min(tokens, left[0]), min(requests, left[1])
        return tokens, requests

    def _share_left(self, said: RecentUsage, at: float, key: str) -> tuple[float, float]:
        """What we may add to our windows of `key` if the others count us as `said` (as of `at`): our
        windows no fuller than that said, or than a fair part of the limit (pulse.allowance), so that
        instances cut off from storage, some or all, never take together much more than the limit."""
        wall = self._clock.wall()
        windows = self._window_seconds, self._request_window_seconds
        allowed = pulse.allowance(said, key, at, self._view.writers, *windows)
        slots = {slot: (counts[0], counts[1]) for slot, counts in self._slots.get(key, {}).items()}
        mine = RecentUsage(said.day, {key: slots}).in_window(key, wall, *windows)
        return allowed[0] - mine[0], allowed[1] - mine[1]

    def _in_window(self, wall: float) -> bool:
        """Whether anything of ours is still in the window (our pulse must stay fresh till it is not)."""
        newest = max((slot for slots in self._slots.values() for slot in slots), default=None)
        return newest is not None and newest >= slot_of(wall) - round(self._window_seconds / SLOT)

    def seconds_until(self, key: str, tokens: int, tpm: int, rpm: int) -> float:
        wait = self._local.seconds_until(key, tokens, tpm, rpm)
        if (self._cold() or self._pulse_failing or self._view.age() > self._stale_after) and wait != math.inf:
            free_tokens, free_requests = self.headroom(key, tpm, rpm)
            if free_tokens < tokens or free_requests < 1:
                wait = max(wait, self._read_interval)  # the warm view may have room: look again then
        return wait

    def window_tokens(self, key: str) -> float:
        return self._local.window_tokens(key)

    def own_window_tokens(self, key: str) -> float:
        return self._local.own_window_tokens(key)

    def open_tokens(self, key: str) -> float:
        return self._local.open_tokens(key)

    def day_tokens(self, client: str, deployment: str | None = None) -> int:
        return self._local.day_tokens(client, deployment)

    def host_usage(self) -> Mapping[str, HostUsage]:
        return self._local.host_usage()

    def records(self) -> Mapping[UsageKey, UsageRecord]:
        return self._local.records()

    async def usage_report(self, first: date, last: date) -> Mapping[UsageKey, UsageRecord]:
        """Every writer's usage from the table, this process's own from memory (it may hold more than
        its rows yet). Raises when storage cannot be read: a partial report would look like lost usage."""
        query, parameters = usage_rows.day_range(first, last)
        pages = await asyncio.gather(
            *(self._query("report", query, {**parameters, "pk": pk}) for pk in usage_rows.partitions())
        )
        report: dict[UsageKey, UsageRecord] = {}
        for rows in pages:
            for row in rows:
                writer, key, record = usage_rows.read(row)
                if writer != self.writer:
                    _add(report, key, record)
        for key, record in (await self._local.usage_report(first, last)).items():
            _add(report, key, record)
        return report

    def describe(self) -> dict[str, Any]:
        wall = self._clock.wall()
        return {
            "kind": "table",
            **self.health.describe(),
            "writer": self.writer,
            "leader": self._lease.held_by(self.writer, wall),
            "leader_terms": self.terms,
            "warm": self.warm,
            "view_age_seconds": round(self._view.age(), 1) if self._view.seq >= 0 else None,
            "writes": self.writes,
            "reads": self.reads,
            "entities_written": self.entities_written,
            "entities_read": self.entities_read,
            "pending_usage_rows": self._usage.pending(self._local.records()),
            "abandoned_usage_rows": self._usage.abandoned,
            "dropped_items": self.dropped_items,
        }

    @property
    def warm(self) -> bool:
        return not self._cold()

    def _cold(self) -> bool:
        return not self._warm and self._clock.now() - self._started < WARMUP_LIMIT_CYCLES * self._read_interval

    # -- background ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Flush, and read or write the summary, forever; never raises."""
        await self._forever(lambda: ensure_table(self._client), 0.0, once=True)
        # Writes never wait for reads: the pulse and usage rows go out while the first summary is still sought.
        await asyncio.gather(self._forever(self.flush, self._flush_interval), self._warm_then_share())

    async def _warm_then_share(self) -> None:
        await self._forever(self.refresh, 0.0, once=True)  # warm first: one small read
        await self._forever(self.share, self._read_interval)

    async def _forever(self, operation: Callable[[], Awaitable[Any]], interval: float, once: bool = False) -> None:
        """Run `operation` every `interval` (or after the delay it returns), backing off while it fails."""
        delay = interval
        while True:
            try:
                wait = await operation()
            except ResourceNotFoundError:
                await self._forever(lambda: ensure_table(self._client), 0.0, once=True)  # deleted under us
                continue
            except Exception as exc:  # noqa: BLE001 - a background loop must outlive any one failure
                delay = min(max(delay * 2, self._flush_interval), MAX_BACKOFF_SECONDS)
                log.debug("table ledger: %s failed (%s); again in %.1f s", operation, type(exc).__name__, delay)
                await self._clock.sleep(delay)
                continue
            if once:
                return
            delay = interval
            await self._clock.sleep(wait if isinstance(wait, float) else interval)

    async def flush(self) -> None:
        """Write the pulse if it changed and every usage row the table lacks. A failing part does not stop
        the others; the first failure is raised at the end, so the loop backs off."""
        failures: list[Exception] = []
        wall = self._clock.wall()
        # Rewritten every flush while anything of ours is in the window, then once more marked final: so
        # the leader can tell a quiet writer from one that storage cut off (which it carries forward).
        final = self._closing or not self._in_window(wall)
        if self._version != self._pulsed or not final or (self._published is not None and not self._published.final):
            try:
                await self._write_pulse(wall, final)
            except Exception as exc:  # noqa: BLE001 - noted in the health, raised below
                failures.append(exc)
        for batch in self._usage.batches(self._local.records()):
            try:
                await self._write("usage", [("upsert", usage_rows.entity(self.writer, k, t)) for k, t in batch])
                self._usage.written(batch)
            except Exception as exc:  # noqa: BLE001
                if permanent(exc):
                    self._usage.refused(batch, str(exc)[:200])
                failures.append(exc)
        self._forget_slots(slot_of(wall) - SLOTS_KEPT)
        if failures:
            raise failures[0]

    async def _write_pulse(self, wall: float, final: bool) -> None:
        version = self._version
        usage = self._recent(wall)
        chunks, dropped = usage.chunks()
        self._note_dropped(dropped, "pulse")
        self._pulse_seq += 1  # a new number even for a retry: a write that failed may still have landed
        operations = pulse.operations(
            self.writer, self._pulse_seq, usage, wall, chunks, self._pulse_chunks, final=final
        )
        if operations:  # none: nothing used yet, nothing written before
            try:
                await self._write("pulse", operations)
            except BaseException:
                self._pulse_failing = True
                raise
        self._pulse_failing = False
        self._published = pulse.Pulse(self.writer, self._pulse_seq, usage, wall, final)
        self._pulse_chunks = max(self._pulse_chunks, len(chunks))
        self._pulsed = version
        self._view.wrote(usage)

    def _recent(self, wall: float) -> RecentUsage:
        day = utc_day(wall)
        since = slot_of(wall) - SLOTS_KEPT + 1
        windows = {
            key: {slot: (counts[0], counts[1]) for slot, counts in slots.items() if slot >= since and counts != [0, 0]}
            for key, slots in self._slots.items()
        }
        days = {(client, dep): r.tokens for (d, client, dep), r in self._local.records().items() if d == day}
        return RecentUsage(day, {key: slots for key, slots in windows.items() if slots}, days, dict(self._limits))

    def _forget_slots(self, before: int) -> None:
        for key in list(self._slots):
            slots = self._slots[key]
            for slot in [s for s in slots if s < before]:
                del slots[slot]
            if not slots:
                del self._slots[key]

    async def share(self) -> float:
        """One cycle of the shared view: write the summary if this writer may lead, else read it.
        Returns the clock seconds until the next cycle."""
        try:
            started = self._clock.now()
            if await self.lead():
                self.health.forget("summary")  # leading, it reads no summary: how that went last is moot
                return max(0.0, self._read_interval - (self._clock.now() - started))  # a steady cadence
        except Exception:  # reads go on while the summary cannot be written
            await self.refresh()
            raise
        self.health.forget("pulses", "lease", "sweep", "summary copy")  # not leading: how those went is moot
        return await self.refresh()

    async def refresh(self) -> float:
        """Read the lease and the summary; returns when to read again: just after the leader's next write."""
        copy = shard(self.writer, self._copies) if self._copies > 1 else 0
        self._lease, current = summary.read(await self._summary_rows(copy))
        wall = self._clock.wall()
        if copy and (
            current is None
            or wall - current.read_start > self._stale_after
            or self._lease.open_to(self.writer, wall, self._skew + self._takeover_delay)
        ):
            # A copy not written (yet, or any more), or a lease that looks free: the first copy says for sure.
            self._lease, current = summary.read(await self._summary_rows(0))
        self._copies = current.copies if current is not None else 1
        previous = self._view.seq
        self._view.learn(current)
        self._warm = True
        interval = self._read_interval
        if current is None or self._view.age() > self._lease_seconds:
            return interval  # no leader now: the lease decides who becomes one
        if current.seq == previous and not self._late:
            self._late = True  # read before this cycle's summary landed: look once more, a little later
            return PHASE * interval
        self._late = False
        return interval - (self._view.age() - PHASE * interval) % interval

    async def _summary_rows(self, copy: int) -> list[Any]:
        return await self._query("summary", "PartitionKey eq @pk", {"pk": summary.partition(copy)})

    async def lead(self) -> bool:
        """Sum every pulse into the summary, if the lease is ours or can be taken; False if it is not."""
        wall = self._clock.wall()
        if self._lease.holder != self.writer:
            if not self._lease.open_to(self.writer, wall, self._skew + self._takeover_delay):
                return False
            # Take the lease on its own first: of many that saw it run out, the losers pay one small write. Taken
            # for a whole term at once: one taken as already run out would look free while the summary is built.
            until = wall + self._lease_seconds
            if not await self._lease_write(
                [lease.operation(self._lease, summary.PARTITION, self.writer, until)], until
            ):
                return False
        day = utc_day(wall)
        pages = await asyncio.gather(
            *(self._query("pulses", "PartitionKey eq @pk", {"pk": pk}) for pk in pulse.partitions())
        )
        pulses = pulse.read(row for page in pages for row in page)
        aggregate, active = summary.aggregate(
            pulses,
            day,
            wall,
            stale_after=self._stale_after,
            window=self._window_seconds,
            request_window=self._request_window_seconds,
        )
        seq = max(self._summary_seq, self._view.seq) + 1  # a new leader goes on from the last summary
        until = wall + self._lease_seconds
        total = Summary(aggregate, wall, seq, active, self.writer, summary.copies_for(active), until)
        chunks, dropped = total.usage.chunks()
        self._note_dropped(dropped, "summary")
        if not await self._lease_write(summary.operations(total, chunks, self._summary_chunks, self._lease), until):
            return False
        # The other copies, each its own transaction: one failing leaves its readers on the first copy.
        await asyncio.gather(
            *(
                self._write("summary copy", summary.operations(total, chunks, self._summary_chunks, None, copy))
                for copy in range(1, total.copies)
            ),
            return_exceptions=True,
        )
        self._summary_seq, self._summary_chunks = total.seq, max(self._summary_chunks, len(chunks))
        own = next((p.usage for p in pulses if p.writer == self.writer), RecentUsage())
        self._view.learn(total, seen=own)  # the leader knows exactly which of its pulses it summed
        self._warm = True
        try:
            await self._sweep(summary.finished(pulses, day, slot_of(wall)))
        except Exception as exc:  # noqa: BLE001 - housekeeping: the summary is written, the lease renewed
            log.debug("table ledger: sweep failed (%s); again next summary", type(exc).__name__)
        return True

    async def _lease_write(self, operations: list[Any], until: float) -> bool:
        """A transaction whose first operation takes or renews the lease; False if someone else holds it."""
        try:
            result = await self._write("lease", operations, expected=(409, 412))
        except HttpResponseError as exc:
            if exc.status_code not in (409, 412):
                raise
            self._lease = Lease("", self._clock.wall() + self._lease_seconds)  # the next read says who
            return False
        if self._lease.holder != self.writer:
            self.terms += 1
        self._lease = Lease(self.writer, until, result[0].get("etag"))
        return True

    async def _sweep(self, finished: list[pulse.Pulse]) -> None:
        """Delete pulses that count for nothing any more, unless their writer wrote since (ETag)."""
        for done in finished[:SWEEP_LIMIT]:
            # Chunk 0 last: a pulse half deleted still reads as a pulse (its head names it) and is swept again.
            for partition, row, etag in sorted(done.rows, key=lambda r: r[1], reverse=True):
                try:
                    async with self.health.call("sweep"):
                        await self._client.delete_entity(
                            partition, row, etag=etag, match_condition=MatchConditions.IfNotModified
                        )
                except HttpResponseError as exc:
                    if exc.status_code not in (404, 412):
                        raise

    async def _write(self, kind: str, operations: list[Any], expected: tuple[int, ...] = ()) -> list[Mapping[str, Any]]:
        async with self.health.call(kind, expected):
            result = await self._client.submit_transaction(operations)
        self.writes += 1
        self.entities_written += len(operations)
        return result

    async def _query(self, kind: str, query: str, parameters: dict[str, Any]) -> list[Any]:
        async with self.health.call(kind):
            rows = [row async for row in self._client.query_entities(query, parameters=parameters)]
        self.reads += 1
        self.entities_read += len(rows)
        return rows

    def _note_dropped(self, dropped: int, what: str) -> None:
        if dropped:
            if not self.dropped_items:
                log.error("table ledger: %d items did not fit one %s transaction; left out", dropped, what)
            self.dropped_items += dropped

    async def close(self) -> None:
        """Write what is pending and give up the lease, within a bound; then close the client."""
        try:
            await asyncio.wait_for(self._last_words(), CLOSE_TIMEOUT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - shutting down: say what was not written
            pending = self._usage.pending(self._local.records())
            log.error("table ledger: closing without storage (%r); %d usage rows unwritten", exc, pending)
        await self._client.close()

    async def _last_words(self) -> None:
        self._closing = True  # the last pulse says so: the leader does not carry this writer forward
        await self.flush()
        wall = self._clock.wall()
        if self._lease.held_by(self.writer, wall):
            release = Lease(self.writer, self._lease.until, self._lease.etag)
            await self._write("lease", [lease.operation(release, summary.PARTITION, self.writer, 0.0)])


def _add(report: dict[UsageKey, UsageRecord], key: UsageKey, record: UsageRecord) -> None:
    total = report.setdefault(key, UsageRecord())
    total.prompt += record.prompt
    total.completion += record.completion
    total.requests += record.requests
