"""The service under load: records/s and latency of ``python -m pipeline.serve`` one request at a time against
dynamic batching, beside ``infer.py`` on the same records, and a soak with bad requests among the good.

    python bench/bench_serve.py --run RUN --archive ARCHIVE [--clients 1,8,32,64] [--seconds 20] \\
        [--records 2000] [--photos] [--soak-minutes 5]

Records are ARCHIVE's (its manifest and attachments), held back from training; without ``--photos`` they are
sent text only. C clients each send one request after another (a closed loop) for ``--seconds``; records/s is
answers per second, latency from send to answer. The load generator runs on the same machine and takes its share
of the cores. ``infer.py`` reads an archive of the same records (text only unless ``--photos``), its prediction
phase's records/s. The soak keeps 8 clients going for ``--soak-minutes`` with one request in ten bad (malformed
JSON, bad base64, no text, wrong content type, a file of the wrong type): it counts 5xx answers and good requests
that failed, and the RSS of the server's processes at the start and the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
P99_TARGET_MS = 200
RSS_EVERY_S = 30


def held_back(archive: Path, n: int, photos: bool) -> list[dict]:
    """Up to ``n`` records of the archive as requests (attachments inlined as base64 with ``photos``)."""
    manifest = archive / "complaints.jsonl"
    records = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []
    for r in records[:n]:
        if not photos and not (r.get("text") or "").strip():
            continue  # text only: a record without text is not one
        names = (r.get("attachments") or []) if photos else []
        out.append(
            {
                "id": str(r["id"]),
                "text": r.get("text") or "",
                "attachments": [
                    {"name": a, "data": base64.b64encode((archive / a).read_bytes()).decode()} for a in names
                ],
            }
        )
    return out


def infer_rate(run: str, archive: Path, records: list[dict], photos: bool, folder: Path) -> float:
    """``infer.py``'s records/s (its prediction phase) on an archive of the same records."""
    copy = folder / "archive"
    copy.mkdir()
    lines = []
    for r in records:
        names = [a["name"] for a in r["attachments"]]
        for name in names:
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(archive / name, copy / name)
        lines.append(json.dumps({"id": r["id"], "text": r["text"], "attachments": names}, ensure_ascii=False))
    (copy / "complaints.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "infer.py",
            "--checkpoint",
            run,
            "--input",
            str(copy),
            "--output",
            str(folder / "rows.jsonl"),
            "--device",
            "cpu",
            "--overwrite",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("records ") and "records/s" in x)
    return float(line.split("|")[1].split()[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, run: str, *options: str):
        port = free_port()  # a port of its own: the last server's may still be closing
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.serve", run, "--port", str(port), "--device", "cpu", *options],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        ready = self.proc.stdout.readline()
        if not ready.startswith("serving "):
            raise RuntimeError(f"the server did not start: {ready}")

    def rss_mb(self) -> float:
        """The resident memory of the server and every process it started."""
        main = psutil.Process(self.proc.pid)
        return sum(p.memory_info().rss for p in [main, *main.children(recursive=True)]) / 2**20

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=120)


def post(body: bytes, content_type: str = "application/json") -> bytes:
    """A ``POST /predict`` request as bytes on the wire (HTTP/1.1, keep-alive)."""
    head = (
        f"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def as_json(item: dict) -> bytes:
    return post(json.dumps(item, ensure_ascii=False).encode())


async def answer(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response off the connection; its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    if headers.get("transfer-encoding") == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    else:
        await reader.readexactly(int(headers.get("content-length", 0)))
    return int(lines[0].split()[1])


async def load(url: str, clients: int, seconds: float, requests: list[tuple[str, bytes]]) -> dict:
    """``clients`` closed loops for ``seconds``, each on one keep-alive connection; requests are ``(kind, bytes)``
    pairs, kind ``good`` or ``bad``. The client is a few lines over asyncio's streams, not an HTTP library: on 2
    cores httpx took 3.7 ms of CPU a request, more than the service under test."""
    host, port = url.removeprefix("http://").split(":")
    latencies, codes, failed_good = [], [], 0
    cycle = itertools.cycle(requests)
    stop_at = time.perf_counter() + seconds

    async def client():
        nonlocal failed_good
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < stop_at:
                kind, request = next(cycle)
                sent = time.perf_counter()
                writer.write(request)
                status = await answer(reader)
                codes.append(status)
                if kind == "good":
                    latencies.append(time.perf_counter() - sent)
                    failed_good += status != 200
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*[client() for _ in range(clients)])
    elapsed = time.perf_counter() - started
    ms = sorted(x * 1000 for x in latencies)
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return {
        "clients": clients,
        "records_per_s": len(latencies) / elapsed,
        "p50": pick(0.50),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "server_errors": sum(c >= 500 for c in codes),
        "failed_good": failed_good,
    }


async def soak(server: Server, seconds: float, requests: list) -> tuple[dict, list[float]]:
    """8 clients for ``seconds``; the load's figures and the server's RSS at the start, every ``RSS_EVERY_S``
    seconds and at the end (a leak climbs to the end; a warm-up flattens)."""
    rss = [server.rss_mb()]

    async def watch():
        while True:
            await asyncio.sleep(RSS_EVERY_S)
            rss.append(server.rss_mb())

    watcher = asyncio.create_task(watch())
    r = await load(server.url, 8, seconds, requests)
    watcher.cancel()
    rss.append(server.rss_mb())
    return r, rss


def bad_requests() -> list[tuple[str, bytes]]:
    return [
        ("bad", post(b'{"text": ')),
        ("bad", as_json({"text": "t", "attachments": [{"name": "a.jpg", "data": "@@"}]})),
        ("bad", as_json({"id": "x"})),
        ("bad", post(b"hello", "text/plain")),
        (
            "bad",
            as_json(
                {
                    "text": "see file",
                    "attachments": [{"name": "n.txt", "data": base64.b64encode(b"not a photo").decode()}],
                }
            ),
        ),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--archive", required=True, help="held-back records (a folder with complaints.jsonl)")
    p.add_argument("--records", type=int, default=2000)
    p.add_argument("--clients", default="1,8,32,64")
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--photos", action="store_true", help="send the records' attachments too")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--batch-timeout", type=float, default=0.01)
    p.add_argument("--soak-minutes", type=float, default=5)
    args = p.parse_args()
    archive = Path(args.archive)
    records = held_back(archive, args.records, args.photos)
    good = [("good", as_json(r)) for r in records]
    with tempfile.TemporaryDirectory() as tmp:
        rate = infer_rate(args.run, archive, records, args.photos, Path(tmp))
    kind = "with photos" if args.photos else "text only"
    print(f"{len(records)} records of {archive}, {kind}; infer.py: {rate:.1f} records/s")
    clients = [int(c) for c in args.clients.split(",")]
    results = {}
    modes = {
        "batch size 1": ["--max-batch-size", "1"],
        f"dynamic (up to {args.max_batch_size}, {args.batch_timeout * 1000:g} ms)": [
            "--max-batch-size",
            str(args.max_batch_size),
            "--batch-timeout",
            str(args.batch_timeout),
        ],
    }
    print(f"{'mode':34} {'clients':>7} {'records/s':>9} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}")
    for mode, options in modes.items():
        server = Server(args.run, *options)
        try:
            asyncio.run(load(server.url, 4, 3, good))  # warm up
            for c in clients:
                r = results[mode, c] = asyncio.run(load(server.url, c, args.seconds, good))
                print(
                    f"{mode:34} {c:>7} {r['records_per_s']:>9.1f} {r['p50']:>7.1f} {r['p95']:>7.1f} {r['p99']:>7.1f}",
                    flush=True,
                )
        finally:
            server.stop()
    one, dynamic = modes
    top = max(clients)
    at = 32 if 32 in clients else top
    print(
        f"dynamic batching / batch size 1 at {at} clients: "
        f"{results[dynamic, at]['records_per_s'] / results[one, at]['records_per_s']:.2f}x"
    )
    within = [r for (m, _), r in results.items() if m == dynamic and r["p99"] < P99_TARGET_MS]
    if within:
        best = max(within, key=lambda r: r["records_per_s"])
        print(
            f"highest load with p99 under {P99_TARGET_MS} ms: {best['clients']} clients, "
            f"{best['records_per_s']:.1f} records/s = {best['records_per_s'] / rate:.2f}x infer.py's"
        )
    else:
        print(f"no load kept p99 under {P99_TARGET_MS} ms")
    if args.soak_minutes > 0:
        bad = bad_requests()
        mixed = [x for i, g in enumerate(good) for x in ([g] if i % 9 else [g, bad[i // 9 % len(bad)]])]
        server = Server(args.run, *modes[dynamic])
        try:
            asyncio.run(load(server.url, 4, 3, good))
            r, rss = asyncio.run(soak(server, args.soak_minutes * 60, mixed))
        finally:
            server.stop()
        print(
            f"soak: {args.soak_minutes:g} min, 8 clients, one request in ten bad: {r['records_per_s']:.1f} good "
            f"records/s, p99 {r['p99']:.1f} ms, {r['server_errors']} 5xx, {r['failed_good']} good requests failed; "
            f"RSS {rss[0]:.0f} MB -> {rss[-1]:.0f} MB ({rss[-1] - rss[0]:+.0f} MB)"
        )
        print(f"soak: RSS every {RSS_EVERY_S} s (MB): {', '.join(f'{x:.0f}' for x in rss)}")


if __name__ == "__main__":
    main()
