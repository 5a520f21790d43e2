#!/usr/bin/env python3
"""TLS against plain through rproxy, in one interleaved run (README "Security", "TLS for clients").

    python loadtest/tls_ab.py [--rounds 3] [--json FILE]

Starts this checkout's embedded cluster (3 masters + 3 replicas), a CA and a server certificate
(trustme), and two rproxy processes: one with the plain listener only, one with a TLS listener
beside its plain one. Each round runs redis-benchmark GET (50 clients, -d 64 -r 100000) at -P 16
and -P 1 against: the plain proxy; the plain listener of the proxy with TLS on; its TLS listener
(redis-benchmark --tls --cacert). The order of the three rotates by round. Reported: TLS / plain
(the same process), and plain with the TLS listener on / plain without (a TLS listener must not
slow plain clients), medians of the per-round ratios, with the proxies' CPU per request.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402  loadtest/bench.py
from bench import Proxy, log, report, rounds_arguments, run_bench  # noqa: E402

from rproxy.localcluster import LocalCluster  # noqa: E402


def main() -> int:
    args = rounds_arguments(__doc__.splitlines()[0]).parse_args()
    import trustme

    work = Path(tempfile.mkdtemp(prefix="rproxy-tls-ab-"))
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(work / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(work / "server.pem"))
    cert.private_key_pem.write_to_path(str(work / "server.key"))
    results: list[dict[str, Any]] = []
    with LocalCluster(3, 1) as cluster:
        tls_port = bench.free_port()
        plain_only = Proxy(cluster.seeds, label="plain-only")
        with_tls = Proxy(cluster.seeds, label="with-tls", avoid_ports=[tls_port], extra=[
            "--tls-listen", f"127.0.0.1:{tls_port}", "--tls-cert-file", str(work / "server.pem"),
            "--tls-key-file", str(work / "server.key")])
        try:
            plain_only.wait_ready()
            with_tls.wait_ready()
            targets = [("plain, no TLS listener", plain_only.addr, plain_only.pid, False),
                       ("plain, TLS listener on", with_tls.addr, with_tls.pid, False),
                       ("TLS", ("127.0.0.1", tls_port), with_tls.pid, True)]
            for rnd in range(args.rounds):
                for pipeline in (16, 1):
                    n = args.requests if pipeline > 1 else args.requests_p1
                    order = targets[rnd % 3:] + targets[:rnd % 3]
                    for name, (host, port), pid, tls in order:
                        cmd = ["redis-benchmark", "-h", host, "-p", str(port), "-c",
                               str(args.clients), "-n", str(n), "-P", str(pipeline), "-t",
                               "get", "-d", "64", "-r", "100000"]
                        if tls:
                            cmd += ["--tls", "--cacert", str(work / "ca.pem")]
                        res = run_bench(cmd, 300, pid)
                        res.update(round=rnd, pipeline=pipeline, target=name)
                        results.append(res)
                        log(f"[round {rnd + 1}/{args.rounds}] GET -P {pipeline:<2} {name:<24} "
                            + (f"{res['rps']:>9,.0f} ops/s  CPU {res.get('proxy_cpu_s')} s"
                               if res["ok"] else f"FAILED: {res['error']}"))
        finally:
            plain_only.stop()
            with_tls.stop()
    summary = {}
    for pipeline in (16, 1):
        def per_round(a: str, b: str, key: str) -> list[float]:
            out = []
            for rnd in range(args.rounds):
                ra = next(r for r in results if r["round"] == rnd and r["pipeline"] == pipeline
                          and r["target"] == a)
                rb = next(r for r in results if r["round"] == rnd and r["pipeline"] == pipeline
                          and r["target"] == b)
                if ra["ok"] and rb["ok"]:
                    if key == "rps":
                        out.append(ra["rps"] / rb["rps"])
                    elif ra.get("proxy_cpu_s") and rb.get("proxy_cpu_s"):  # requests per CPU-s
                        out.append((ra["rps"] * ra["wall_s"] / ra["proxy_cpu_s"])
                                   / (rb["rps"] * rb["wall_s"] / rb["proxy_cpu_s"]))
            return out

        tls = per_round("TLS", "plain, TLS listener on", "rps")
        tls_cpu = per_round("TLS", "plain, TLS listener on", "cpu")
        side = per_round("plain, TLS listener on", "plain, no TLS listener", "rps")
        summary[f"GET -P {pipeline}"] = {
            "tls_over_plain": round(statistics.median(tls), 3) if tls else None,
            "tls_over_plain_rounds": [round(x, 3) for x in tls],
            "tls_over_plain_per_cpu": round(statistics.median(tls_cpu), 3) if tls_cpu else None,
            "plain_with_tls_listener_over_without": round(statistics.median(side), 3)
            if side else None,
            "plain_with_tls_listener_over_without_rounds": [round(x, 3) for x in side]}
    return report(summary, results, args.json)


if __name__ == "__main__":
    sys.exit(main())
