#!/usr/bin/env python3
"""What a restricted ACL user costs, in one interleaved run (README "Security", "ACL users").

    python loadtest/acl_ab.py [--rounds 3] [--json FILE]

Starts this checkout's embedded cluster (3 masters + 3 replicas) and one rproxy with two ACL
users besides the default one: ``commands`` (``~* &* +@all -@dangerous``: restricted by command
only) and ``keys`` (``~key:* &* +@all -@dangerous``: every command is checked, key included;
redis-benchmark's keys are ``key:...``). Each round runs redis-benchmark GET and SET (50 clients,
-d 64 -r 100000) at -P 16 and -P 1 as each user (``--user``), the order turning by round.
Reported: each user's throughput over the default user's, medians of the per-round ratios.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import Proxy, log, report, rounds_arguments, run_bench  # noqa: E402  loadtest/bench.py

from rproxy.localcluster import LocalCluster  # noqa: E402

USERS = {"commands": "~* &* +@all -@dangerous", "keys": "~key:* &* +@all -@dangerous"}
SCENARIOS = [("get", 16), ("set", 16), ("get", 1), ("set", 1)]


def main() -> int:
    args = rounds_arguments(__doc__.splitlines()[0]).parse_args()
    conf = Path(tempfile.mkdtemp(prefix="rproxy-acl-ab-")) / "rproxy.toml"
    conf.write_text("[auth]\nusers = [%s]\n" % ", ".join(
        f'"{name} on >pw {rules}"' for name, rules in USERS.items()))
    results: list[dict[str, Any]] = []
    users = ["default", *USERS]
    with LocalCluster(3, 1) as cluster:
        proxy = Proxy(cluster.seeds, label="acl", extra=["--config", str(conf)])
        try:
            proxy.wait_ready()
            for rnd in range(args.rounds):
                for test, pipeline in SCENARIOS:
                    n = args.requests if pipeline > 1 else args.requests_p1
                    for user in users[rnd % 3:] + users[:rnd % 3]:
                        cmd = ["redis-benchmark", "-h", proxy.addr[0], "-p", str(proxy.port),
                               "-c", str(args.clients), "-n", str(n), "-P", str(pipeline), "-t",
                               test, "-d", "64", "-r", "100000"]
                        if user != "default":
                            cmd += ["--user", user, "-a", "pw"]
                        res = run_bench(cmd, 300, proxy.pid)
                        res.update(round=rnd, test=test, pipeline=pipeline, user=user)
                        results.append(res)
                        log(f"[round {rnd + 1}/{args.rounds}] {test.upper()} -P {pipeline:<2} "
                            f"{user:<9} " + (f"{res['rps']:>9,.0f} ops/s" if res["ok"]
                                             else f"FAILED: {res['error']}"))
        finally:
            proxy.stop()
    summary: dict[str, Any] = {}
    for test, pipeline in SCENARIOS:
        def run(rnd: int, user: str) -> dict[str, Any]:
            return next(r for r in results if r["round"] == rnd and r["test"] == test
                        and r["pipeline"] == pipeline and r["user"] == user)

        row: dict[str, Any] = {}
        for user in USERS:
            ratios = [run(rnd, user)["rps"] / run(rnd, "default")["rps"]
                      for rnd in range(args.rounds)
                      if run(rnd, user)["ok"] and run(rnd, "default")["ok"]]
            row[f"{user}_over_default"] = round(statistics.median(ratios), 3) if ratios else None
            row[f"{user}_over_default_rounds"] = [round(x, 3) for x in ratios]
        summary[f"{test.upper()} -P {pipeline}"] = row
    return report(summary, results, args.json)


if __name__ == "__main__":
    sys.exit(main())
