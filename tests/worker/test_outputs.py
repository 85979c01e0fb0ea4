"""Whatever a flow hands back is checked, never trusted: values that cannot become JSON in UTF-8
end the attempt ``failed`` once, with a code and the path of the bad value, in every isolation;
no route answers 500 afterwards (issue 13, case 2: a lone surrogate used to crash-loop the worker).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.conftest import tenant_client
from tests.faults.stack import stack, wait_ready
from tests.worker.test_isolation import create, ended, executions

pytestmark = pytest.mark.timeout(120)

# (flow, kind, code, path)
CASES = [
    ("odd-output", "surrogate", "invalid_output", "output.name"),
    ("odd-output", "bytes", "invalid_output", "output.raw"),
    ("odd-output", "nan", "invalid_output", "output.score"),
    ("odd-output", "inf", "invalid_output", "output.1"),
    ("odd-output", "cycle", "invalid_output", "output.self"),
    ("odd-output", "key", "invalid_output", "output.1"),
    ("odd-output", "bigint", "invalid_output", "output.n"),
    ("odd-output", "object", "invalid_output", "output.o"),
    ("odd-output-thread", "surrogate", "invalid_output", "output.name"),
    ("odd-output-thread", "cycle", "invalid_output", "output.self"),
    ("odd-output-process", "nan", "invalid_output", "output.score"),
    ("odd-output-process", "surrogate", "invalid_output", "output.name"),
    ("odd-output-process", "object", "invalid_output", "output.o"),
    ("odd-partial", "surrogate", "invalid_output", "partial.name"),
    ("odd-partial", "bytes", "invalid_output", "partial.raw"),
    ("odd-usage", "nan", "invalid_output", "metrics.cost"),
    ("odd-usage", "bigint", "invalid_output", "metrics.tokensUsed"),
    ("odd-error", "message", "invalid_error", "error.message"),
    ("odd-error", "bytes", "invalid_error", "error.details.value.raw"),
    ("odd-error", "nan", "invalid_error", "error.details.value.score"),
    ("odd-exception", "any", "flow_error", None),
    ("odd-exit", "any", "flow_error", None),
]


async def test_unstorable_values_end_the_attempt_once_with_their_path(tmp_path: Path) -> None:
    async with stack(tmp_path, flows=("tests.flows", "tests.unpolite"), worker_processes=1) as (
        procs,
        server,
    ):
        base = procs.api()
        procs.start("worker")
        procs.start("dispatcher")
        redis = Redis.from_url(server.url)
        async with redis, tenant_client(base) as http:
            await wait_ready(http)
            assert (await http.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/"})).status_code == 201
            started = [(case, await create(http, case[0], {"kind": case[1]})) for case in CASES]
            for (flow, kind, code, path), run_id in started:
                done = await ended(http, run_id)
                assert done["status"] == "failed", (flow, kind, done)
                assert done["error"]["code"] == code, (flow, kind, done["error"])
                assert done["attempt"] == 1, (flow, kind)
                if path is not None:
                    assert done["error"]["details"]["path"] == path, (flow, kind, done["error"])
                # every route still answers, and the value never reached Redis
                assert (await http.get(f"/v1/runs/{run_id}/events")).status_code == 200
                assert (await http.get(f"/v1/runs/{run_id}/deliveries")).status_code == 200
                cancel = await http.post(f"/v1/runs/{run_id}/cancel")
                assert cancel.status_code == 409 and cancel.json()["error"]["details"]["status"] == "failed"
                assert len(await executions(redis, run_id)) == 1, (flow, kind)
            listed = await http.get("/v1/runs", params={"status": "failed", "limit": 100})
            assert listed.status_code == 200 and len(listed.json()["data"]) == len(CASES)
            # an ordinary exception's text with a lone surrogate is escaped, not refused
            [(_, exc_run)] = [(c, r) for c, r in started if c[0] == "odd-exception"]
            message = (await http.get(f"/v1/runs/{exc_run}")).json()["error"]["message"]
            assert message == "no such file: caf\\udce9"
            # the worker lived through all of it: one process, started once
            assert len(procs.alive("worker")) == 1
            assert procs.log_tail("worker", 200_000).count("worker starting for") == 1
