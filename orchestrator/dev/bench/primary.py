"""One primary's cost and ceiling, and the price of replicated writes (figures for docs/scaling.md).

``redis``: commands (``INFO commandstats``, those run inside Lua scripts included), client commands
(counted with MONITOR, which tells a script's own calls apart), network and memory bytes, and the
redis-server process's CPU (from /proc), per run and per delivery. Redis runs commands on one
thread, so one second divided by its CPU per run is the most runs per second one primary can take
on this machine. Background traffic (poll loops, beacons, metrics) is measured idle first and
subtracted. ``replication``: e2e runs/s and create latency with ORCH_REDIS_MIN_REPLICAS_ACK 0 and 1
on the same primary, replica and Sentinel.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

import aiohttp

from orchestrator.dev.bench.measure import AUTH, Figures, append_outbox, bodies, create_runs, pct, until
from orchestrator.dev.bench.stack import TENANT, Receiver, Stack, cpu_seconds
from orchestrator.models import ExecutionStatus
from orchestrator.runs import keys
from webhooks import OUTBOX_STREAM, EndpointStore
from webhooks.metrics import delivery_gauges
from webhooks.replication import Replication

IDLE_SECONDS = 2.0
DELIVERIES_PER_WEBHOOK_RUN = 3  # queued, running, success


@dataclass
class Usage:
    """Counters of the redis-server at one moment."""

    commands: Counter[str]
    net_bytes: int
    memory: int
    cpu: float
    at: float

    def minus(self, earlier: Usage, idle: Usage | None = None) -> Usage:
        """What happened since `earlier`, less `idle`'s per-second rates over that time."""
        seconds = self.at - earlier.at
        commands = self.commands.copy()
        commands.subtract(earlier.commands)
        net, cpu = self.net_bytes - earlier.net_bytes, self.cpu - earlier.cpu
        if idle is not None:
            rate = seconds / idle.at
            commands.subtract(Counter({k: round(v * rate) for k, v in idle.commands.items()}))
            net -= round(idle.net_bytes * rate)
            cpu -= idle.cpu * rate
        return Usage(commands, net, self.memory - earlier.memory, cpu, seconds)


async def usage(stack: Stack) -> Usage:
    """The server's counters now."""
    assert stack.redis is not None and stack.redis_server.proc is not None
    stats = await stack.redis.info("stats")
    table = await stack.redis.info("commandstats")
    memory = int((await stack.redis.info("memory"))["used_memory"])
    commands = Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in table.items()})
    commands.subtract({"info": 3})  # our own three INFO calls
    net = int(stats["total_net_input_bytes"]) + int(stats["total_net_output_bytes"])
    return Usage(commands, net, memory, cpu_seconds(stack.redis_server.proc.pid), time.monotonic())


async def idle_rates(stack: Stack) -> Usage:
    """Per-second background usage of an idle stack (`at` is the seconds it was measured over)."""
    before = await usage(stack)
    await asyncio.sleep(IDLE_SECONDS)
    return (await usage(stack)).minus(before)


async def settled(stack: Stack, n: int) -> bool:
    """`n` runs succeeded and the dispatchers have read and acknowledged the whole outbox."""
    assert stack.redis is not None
    if not await _succeeded(stack, n):
        return False
    groups = await stack.redis.xinfo_groups(OUTBOX_STREAM)
    done = bool(groups) and all(g["pending"] == 0 and not g.get("lag") for g in groups)
    return done and await stack.redis.xlen(OUTBOX_STREAM) == 0  # trimmed: what remains is kept data


async def _succeeded(stack: Stack, n: int) -> bool:
    assert stack.redis is not None
    return bool(await stack.redis.zcard(keys.index(TENANT, status=ExecutionStatus.success)) >= n)


class Census:
    """MONITOR: client commands and the commands scripts ran, by name."""

    def __init__(self) -> None:
        self.client: Counter[str] = Counter()
        self.script: Counter[str] = Counter()
        self.seconds = 0.0

    async def watch(self, stack: Stack) -> None:
        """Count until cancelled."""
        assert stack.redis is not None
        async with stack.redis.monitor() as monitor:
            async for seen in monitor.listen():
                name = str(seen["command"]).split(" ", 1)[0].strip('"').lower()
                (self.script if seen.get("client_type") == "lua" else self.client)[name] += 1


async def counted(stack: Stack, work: asyncio.Future[object] | None = None, seconds: float = 0) -> Census:
    """What MONITOR saw while `work` ran (or for `seconds`)."""
    census = Census()
    watching = asyncio.get_running_loop().create_task(census.watch(stack))
    await asyncio.sleep(0.2)  # subscribed
    began = time.monotonic()
    await (work if work is not None else asyncio.sleep(seconds))
    census.seconds = time.monotonic() - began
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    return census


async def deliver(stack: Stack, receiver: Receiver, m: int) -> None:
    """Write `m` outbox entries (as transitions would) and wait until each delivery is recorded."""
    assert stack.redis is not None
    receiver.expect, receiver.done = len(receiver.arrivals) + m, asyncio.Event()
    await append_outbox(stack.redis, bodies(m), flow="f")
    await asyncio.wait_for(receiver.done.wait(), 300)
    await until(lambda: _recorded(stack), limit=120, every=0.05)


async def _recorded(stack: Stack) -> bool:
    """Every delivery taken was recorded (no endpoint has a backlog, claimed ones included)."""
    assert stack.redis is not None
    gauges = await delivery_gauges(stack.redis, now_ms=0)
    return gauges.outbox_length == 0 and all(e.backlog == 0 for e in gauges.endpoints)


def _per(
    figures: Figures, prefix: str, use: Usage, n: int, census: Census, idle: Census, sampled: int
) -> None:
    """Figures per `prefix` (run, delivery): `use` covers `n` of them, `census` `sampled` of them."""
    scale = census.seconds / idle.seconds
    client = sum(census.client.values()) - sum(idle.client.values()) * scale
    script = sum(census.script.values()) - sum(idle.script.values()) * scale
    figures[f"redis_commands_per_{prefix}"] = sum(v for v in use.commands.values() if v > 0) / n
    figures[f"redis_client_commands_per_{prefix}"] = client / sampled
    figures[f"redis_script_commands_per_{prefix}"] = script / sampled
    figures[f"redis_net_bytes_per_{prefix}"] = use.net_bytes / n
    figures[f"redis_memory_bytes_per_{prefix}"] = use.memory / n
    figures[f"redis_cpu_us_per_{prefix}"] = use.cpu / n * 1e6
    for name, calls in use.commands.most_common(10):
        if calls / n >= 0.05:
            figures[f"{prefix}_cmd_{name}"] = calls / n


async def scenario_redis(quick: bool) -> Figures:
    """``redis_*_per_run``, ``redis_*_per_delivery`` and ``one_primary_*_per_s`` (the ceiling)."""
    n, m, sample = (1000, 2000, 50) if quick else (4000, 8000, 200)
    figures: Figures = {}
    async with Stack(workers=1, dispatchers=1) as stack:
        idle = await idle_rates(stack)
        quiet = await counted(stack, seconds=IDLE_SECONDS)
        before = await usage(stack)
        await create_runs(stack.url, n)
        await until(lambda: settled(stack, n), limit=300, every=0.05)
        runs = (await usage(stack)).minus(before, idle)
        figures["redis_cpu_share_during_e2e"] = runs.cpu / runs.at
        census = await counted(stack, asyncio.ensure_future(_runs(stack, n, sample)))
        _per(figures, "run", runs, n, census, quiet, sample)
        receiver = await Receiver().start()
        try:
            assert stack.redis is not None
            await EndpointStore(stack.redis).create(tenant=TENANT, url=receiver.url, events=[], flow_ids=[])
            await deliver(stack, receiver, 200)  # warm: the endpoint, the connections
            before = await usage(stack)
            await deliver(stack, receiver, m)
            sent = (await usage(stack)).minus(before, idle)
            sent.commands.subtract({"xadd": m})  # the producer's: counted with the run
            census = await counted(stack, asyncio.ensure_future(deliver(stack, receiver, sample)))
            census.client.subtract({"xadd": sample})
            _per(figures, "delivery", sent, m, census, quiet, sample)
        finally:
            await receiver.stop()
    per_run, per_delivery = figures["redis_cpu_us_per_run"], figures["redis_cpu_us_per_delivery"]
    figures["one_primary_runs_per_s"] = 1e6 / per_run
    figures["one_primary_deliveries_per_s"] = 1e6 / per_delivery
    figures["one_primary_webhook_runs_per_s"] = 1e6 / (per_run + DELIVERIES_PER_WEBHOOK_RUN * per_delivery)
    return figures


async def _runs(stack: Stack, done_before: int, n: int) -> None:
    await create_runs(stack.url, n)
    await until(lambda: settled(stack, done_before + n), limit=120, every=0.05)


async def scenario_replication(quick: bool) -> Figures:
    """``e2e_runs_per_s``, ``e2e_webhook_runs_per_s``, ``create_p50_ms``: ORCH_REDIS_MIN_REPLICAS_ACK 0 and 1.

    Run in the order 0, 1, 1, 0 and averaged, so that a machine that slows down (or warms up)
    during the scenario does not favour either.
    """
    n, one_by_one = (500, 100) if quick else (2000, 300)
    samples: dict[str, list[float]] = {}
    for ack in (0, 1, 1, 0):
        for key, value in (await _replicated_e2e(ack, n, one_by_one)).items():
            samples.setdefault(key, []).append(value)
    figures = {key: sum(values) / len(values) for key, values in samples.items()}
    figures["e2e_ack1_vs_ack0"] = figures["e2e_runs_per_s_ack1"] / figures["e2e_runs_per_s_ack0"]
    figures["e2e_webhook_ack1_vs_ack0"] = (
        figures["e2e_webhook_runs_per_s_ack1"] / figures["e2e_webhook_runs_per_s_ack0"]
    )
    return figures


async def _replicated_e2e(ack: int, n: int, one_by_one: int) -> Figures:
    """One stack on a primary, a replica and a Sentinel, with ORCH_REDIS_MIN_REPLICAS_ACK=`ack`."""
    figures: Figures = {}
    async with Stack(workers=1, dispatchers=1, replicas=1, redis_min_replicas_ack=ack) as stack:
        assert stack.redis is not None
        started = time.perf_counter()  # no endpoint yet: the runs alone
        await create_runs(stack.url, n)
        await until(lambda: _succeeded(stack, n), limit=600, every=0.01)
        figures[f"e2e_runs_per_s_ack{ack}"] = n / (time.perf_counter() - started)
        receiver = await Receiver(expect=DELIVERIES_PER_WEBHOOK_RUN * n).start()
        try:
            await EndpointStore(stack.redis).create(tenant=TENANT, url=receiver.url, events=[], flow_ids=[])
            started = time.perf_counter()
            await create_runs(stack.url, n)
            await asyncio.wait_for(receiver.done.wait(), 600)
            figures[f"e2e_webhook_runs_per_s_ack{ack}"] = n / (time.perf_counter() - started)
            spent: list[float] = []
            async with aiohttp.ClientSession(stack.url, headers=AUTH) as http:
                for _ in range(one_by_one):
                    began = time.perf_counter()
                    async with http.post("/v1/flows/bench-noop/runs", json={"input": {}}) as resp:
                        assert resp.status == 202, await resp.text()
                    spent.append(time.perf_counter() - began)
            figures[f"create_p50_ms_ack{ack}"] = pct(spent, 50) * 1000
            figures[f"create_p99_ms_ack{ack}"] = pct(spent, 99) * 1000
        finally:
            await receiver.stop()
        figures[f"script_write_p50_us_ack{ack}"] = await _script_write_us(stack, ack, one_by_one * 10)
    return figures


async def _script_write_us(stack: Stack, ack: int, n: int) -> float:
    """Median µs of one script write as a transition makes it: alone (ack 0), or with its WAIT (ack 1)."""
    assert stack.redis is not None
    script = stack.redis.register_script("return redis.call('INCR', KEYS[1])")
    replication = Replication(replicas=ack)
    spent: list[float] = []
    for _ in range(n):
        began = time.perf_counter()
        if ack:
            await replication.script(stack.redis, script, ["bench:write"], [], what="bench")
        else:
            await script(keys=["bench:write"])
        spent.append(time.perf_counter() - began)
    return pct(spent, 50) * 1e6
