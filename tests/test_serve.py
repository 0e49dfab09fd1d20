"""python -m pipeline.serve: a real server process on a free port answers with infer.py's rows, refuses bad requests
in one line without harm, asks for its API key, stops in order, and its page works in a browser."""

import asyncio
import base64
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from factory import ROOT, free_port, image_bytes, infer, png_bomb, read_jsonl

KEY = "s3cret-key"
HEADERS = {"X-API-Key": KEY}
COMPARED_AWAY = ("source", "run")  # where a row came from: the archive's line, or the request


class Server:
    """``python -m pipeline.serve RUN`` in its own process, started and waited for until it says it is ready."""

    def __init__(self, run, *options: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.serve", str(run), "--port", str(self.port), "--device", "cpu", *options],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.ready = self.proc.stdout.readline()  # the one line it prints when it answers
        assert self.ready.startswith("serving "), self.ready + self.proc.stderr.read()[-3000:]
        socket.create_connection(("127.0.0.1", self.port), timeout=5).close()  # ready: no client is refused now

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=120)
        return self.proc.returncode, err

    def processes_left(self) -> list[str]:
        """Anything of the server's session still running (LitServe's HTTP and model workers included); an ended
        process its parent has not reaped (state Z) is not running."""
        out = subprocess.run(["ps", "-o", "stat=,pid=,args=", "-s", str(self.proc.pid)], capture_output=True, text=True)
        return [line for line in out.stdout.splitlines() if line.strip() and not line.lstrip().startswith("Z")]


@pytest.fixture(scope="module")
def server(trained_run):
    # a request waits up to 1 s for its batch to fill: the stop test's requests are in flight when it stops
    s = Server(trained_run, "--api-key", KEY, "--max-batch-size", "64", "--batch-timeout", "1.0", "--max-body-mb", "2")
    yield s
    s.stop()


def predict(server, **kw) -> httpx.Response:
    return httpx.post(f"{server.url}/predict", headers=kw.pop("headers", HEADERS), timeout=60, **kw)


def same_row(answer: dict, row: dict) -> None:
    assert set(answer) - set(COMPARED_AWAY) == set(row) - set(COMPARED_AWAY)
    for key, value in row.items():
        if key in COMPARED_AWAY:
            continue
        if key.endswith("_confidence") and value is not None:
            assert abs(answer[key] - value) <= 1e-5, (key, answer[key], value)
        elif key.endswith("_probs") and value is not None:
            assert all(abs(answer[key][c] - p) <= 1e-5 for c, p in value.items()), key
        elif key != "modality_weights":  # labels, status, warnings, needs_review, review reasons: equal
            assert answer[key] == value, (key, answer[key], value)


def test_each_record_sent_alone_gets_infer_pys_row_as_json_and_as_a_form(server, tiny_demo, trained_run, tmp_path):
    out = tmp_path / "rows.jsonl"
    assert (
        infer(
            "--checkpoint", str(trained_run), "--input", str(tiny_demo["test"]), "--output", str(out), "--device", "cpu"
        )
        == 0
    )
    rows = {r["id"]: r for r in read_jsonl(out)}
    records = read_jsonl(tiny_demo["test"] / "complaints.jsonl")
    assert any(r.get("attachments") for r in records)
    for record in records:
        names = record.get("attachments") or []
        files = [(name, (tiny_demo["test"] / name).read_bytes()) for name in names]
        as_json = predict(
            server,
            json={
                "id": record["id"],
                "text": record["text"],
                "attachments": [{"name": n, "data": base64.b64encode(b).decode()} for n, b in files],
            },
        )
        assert as_json.status_code == 200, as_json.text
        same_row(as_json.json(), rows[record["id"]])
        assert as_json.json()["run"] == Path(trained_run).name
        as_form = predict(
            server,
            data={"id": record["id"], "text": record["text"]},
            files=[("files", (n, b)) for n, b in files] or None,
        )
        assert as_form.status_code == 200, as_form.text
        same_row(as_form.json(), rows[record["id"]])


def test_a_pretrained_lite0_run_is_served_with_infer_pys_rows(lite0_run, tiny_demo, tmp_path):
    out = tmp_path / "rows.jsonl"
    assert infer("--checkpoint", lite0_run, "--input", tiny_demo["test"], "--output", out, "--device", "cpu") == 0
    rows = {r["id"]: r for r in read_jsonl(out)}
    records = [r for r in read_jsonl(tiny_demo["test"] / "complaints.jsonl") if r.get("attachments")][:4]
    lite0 = Server(lite0_run, "--api-key", KEY)
    try:
        for record in records:
            files = [(name, (tiny_demo["test"] / name).read_bytes()) for name in record["attachments"]]
            answer = predict(
                lite0, data={"id": record["id"], "text": record["text"]}, files=[("files", f) for f in files]
            )
            assert answer.status_code == 200, answer.text
            same_row(answer.json(), rows[record["id"]])
    finally:
        code, err = lite0.stop()
        assert code in (0, 143), err[-3000:]  # 143: the SIGTERM stop (test_sigterm_... checks it)


def bad(server, status: int, said: str, **kw) -> None:
    answer = predict(server, **kw)
    assert answer.status_code == status, (answer.status_code, answer.text)
    detail = answer.json()["detail"]
    assert said in detail and "\n" not in detail, detail


def test_bad_requests_are_refused_in_one_line_and_the_next_one_is_answered(server):
    good = {"id": "g1", "text": "the courier left my parcel in the rain"}
    first = predict(server, json=good).json()
    bad(
        server,
        413,
        "over the limit of 2097152",
        content=b"x" * (3 * 2**20),
        headers={**HEADERS, "content-type": "application/json"},
    )
    bad(
        server,
        400,
        "the body is not valid JSON",
        content=b'{"text": ',
        headers={**HEADERS, "content-type": "application/json"},
    )
    bad(
        server,
        415,
        "send application/json or multipart/form-data",
        content=b"hello",
        headers={**HEADERS, "content-type": "text/plain"},
    )
    bad(server, 400, "no text and no attachments: nothing to analyse", json={"id": "x"})
    bad(
        server,
        400,
        "attachments[0] (a.jpg): data is not valid base64",
        json={"text": "t", "attachments": [{"name": "a.jpg", "data": "@@not base64@@"}]},
    )
    bad(server, 400, "text: expected a string", json={"text": ["a list"]})
    bad(server, 400, "unknown form field 'txt'", data={"txt": "typo"})

    # what is wrong inside an attachment is the record's warning, as in an archive: never decoded past the limits
    attachments = {
        "bomb.png": png_bomb(19_200),
        "notes.txt": b"plain text, not a photo",
        "../../etc/passwd": b"x",
        "/etc/shadow": image_bytes(),
    }
    answer = predict(
        server,
        json={
            "id": "r1",
            "text": "see the photos",
            "attachments": [{"name": n, "data": base64.b64encode(b).decode()} for n, b in attachments.items()],
        },
    )
    assert answer.status_code == 200, answer.text
    row = answer.json()
    warned = " ".join(row["warnings"])
    assert row["status"] == "partial" and row["category"] is not None
    for said in (
        "bomb.png",
        "unsupported: notes.txt",
        "outside_archive: ../../etc/passwd",
        "outside_archive: /etc/shadow",
    ):
        assert said in warned, row["warnings"]
    assert predict(server, json=good).json() == first  # the server is as it was


def test_the_api_key_guards_predict_and_info_but_not_health(server):
    for headers in ({}, {"X-API-Key": "wrong"}):
        answer = predict(server, json={"text": "hello"}, headers=headers)
        assert answer.status_code == 401 and answer.json()["detail"] == "missing or wrong X-API-Key header"
        assert httpx.get(f"{server.url}/info", headers=headers).status_code == 401
    assert httpx.get(f"{server.url}/health").status_code == 200
    info = httpx.get(f"{server.url}/info", headers=HEADERS).json()["model"]
    assert set(info["tasks"]) == {"category", "sentiment", "severity"} and len(info["checkpoint_sha256"]) == 64


async def many(url: str, n: int, payload: dict, headers: dict | None = None) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=120, headers=headers) as client:
        return await asyncio.gather(*[client.post(f"{url}/predict", json=payload) for _ in range(n)])


def test_an_answer_later_than_the_time_limit_is_504_and_the_server_recovers(trained_run):
    """One request at a time and a short time limit: of a crowd of requests, those left waiting get 504 with
    its reason, and the next request is answered."""
    # 200 at once: none is late only at 2,000 answers a second (0.5 s: 400, which a quiet machine answered)
    s = Server(trained_run, "--max-batch-size", "1", "--timeout", "0.1", "--workers", "1")
    try:
        payload = {"text": "my card was charged twice and the bank will not refund it"}
        answers = asyncio.run(many(s.url, 200, payload))
        codes = {a.status_code for a in answers}
        assert 504 in codes and codes <= {200, 504}, sorted(codes)
        assert all(
            a.json()["detail"] in ("no answer within 0.1 s (--timeout)", "Request timed out")
            for a in answers
            if a.status_code == 504
        )
        deadline, after = time.time() + 20, []
        while 200 not in after and time.time() < deadline:  # it recovers once the crowd's leftovers are dropped
            after.append(httpx.post(f"{s.url}/predict", json=payload, timeout=60).status_code)
            time.sleep(0.5)
        assert after[-1] == 200, after
        _, err = s.stop()
        assert "waiting in the queue" not in err  # nor a line per late request
    finally:
        s.stop()
    time.sleep(1)
    assert s.processes_left() == []


def test_the_triage_page_shows_the_labels_of_a_complaint_typed_in(server, tmp_path):
    """Headless Chromium, driven over its DevTools protocol: text typed into the page, the labels shown."""
    import shutil

    from websockets.sync.client import connect

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "the page test needs Debian's chromium (apt-get install chromium); .ci/run installs it"
    port = free_port()
    chrome = subprocess.Popen(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--remote-debugging-port={port}",
            f"--user-data-dir={tmp_path / 'profile'}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, pages = time.time() + 60, []
        while not pages and time.time() < deadline:
            try:
                pages = [p for p in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if p["type"] == "page"]
            except httpx.HTTPError:
                time.sleep(0.2)
        with connect(pages[0]["webSocketDebuggerUrl"], max_size=None) as ws:
            calls = iter(range(1, 10_000))

            def call(method: str, **params):
                n = next(calls)
                ws.send(json.dumps({"id": n, "method": method, "params": params}))
                while True:
                    message = json.loads(ws.recv(timeout=30))
                    if message.get("id") == n:
                        return message.get("result", {})

            def evaluate(expression: str):
                return call("Runtime.evaluate", expression=expression, awaitPromise=True)["result"].get("value")

            call("Page.navigate", url=server.url + "/")
            deadline = time.time() + 30
            while not evaluate("document.readyState == 'complete' && !!document.getElementById('send')"):
                assert time.time() < deadline, "the page did not load in 30 s"
                time.sleep(0.1)
            call(
                "Runtime.evaluate",
                expression=f"""
                document.getElementById('text').value = 'The parcel came two weeks late and the box was crushed';
                document.getElementById('key').value = {json.dumps(KEY)};
                document.getElementById('send').click();""",
            )
            deadline, table = time.time() + 30, None
            while table is None and time.time() < deadline:
                table = evaluate("document.getElementById('labels') && document.getElementById('labels').innerText")
                time.sleep(0.1)
            review = evaluate("document.getElementById('review').innerText")
    finally:
        chrome.kill()
        chrome.wait()
    assert table is not None, "no labels on the page within 30 s"
    lines = table.splitlines()
    assert [line.split("\t")[0] for line in lines[1:]] == ["category", "sentiment", "severity"], table
    assert all(len(line.split("\t")) == 3 and float(line.split("\t")[2]) > 0 for line in lines[1:]), table
    assert review.startswith(("Needs a person", "No review needed"))


def test_sigterm_answers_the_requests_in_flight_and_leaves_nothing_running(server):
    """The last test of the module's server: SIGTERM while 20 requests wait for their batch (up to 1 s). Each is
    answered, the server exits 143, and none of its processes (LitServe's HTTP and model workers) is left."""
    payload = {"text": "my card was charged twice and the bank will not refund it"}

    async def stop_in_flight():
        limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
        async with httpx.AsyncClient(limits=limits, timeout=120, headers=HEADERS) as client:
            await asyncio.gather(*[client.get(f"{server.url}/health") for _ in range(20)])  # 20 open connections
            sent = asyncio.gather(*[client.post(f"{server.url}/predict", json=payload) for _ in range(20)])
            await asyncio.sleep(0.6)  # sent and read (a loaded machine reads late), waiting for their batch
            server.proc.send_signal(signal.SIGTERM)
            return await sent

    in_flight = asyncio.run(stop_in_flight())
    assert [a.status_code for a in in_flight] == [200] * 20
    code, err = server.stop()
    assert code == 143, err[-3000:]
    time.sleep(1)
    assert server.processes_left() == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health")


@pytest.mark.parametrize("option", [["--threads", "0"], ["--workers", "0"], ["--max-batch-size", "0"]])
def test_a_count_below_one_is_one_line_before_any_model_loads(option, capsys):
    from pipeline.serve.__main__ import main

    assert main(["no-such-run", *option]) == 2
    assert capsys.readouterr().err.strip() == (
        "serve: --workers, --threads and --max-batch-size must be at least 1, --timeout above --batch-timeout"
    )
