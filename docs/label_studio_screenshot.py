"""Take docs/label_studio_task.png: a task of the review queue in Label Studio's labelling page.

    python docs/label_studio_screenshot.py URL EMAIL PASSWORD PROJECT_ID TASK_ID OUT.png

Logs in as the reviewer (Django's login form), then drives headless Chromium over the DevTools protocol on a
pipe (``--remote-debugging-pipe``: no extra package), with the session cookie set, and captures the page once
its choices are drawn.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import requests

WIDTH, HEIGHT = 1400, 1250


def session_cookie(url: str, email: str, password: str) -> str:
    s = requests.Session()
    page = s.get(f"{url}/user/login/", timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    s.post(
        f"{url}/user/login/",
        data={"email": email, "password": password, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{url}/user/login/"},
        timeout=30,
    )
    if "sessionid" not in s.cookies:
        sys.exit(f"login to {url} as {email} failed")
    return s.cookies["sessionid"]


class Browser:
    """Headless Chromium spoken to over its DevTools pipe (fd 3: commands in, fd 4: replies out, NUL-ended)."""

    def __init__(self):
        to_chrome, self._write = os.pipe()
        self._read, from_chrome = os.pipe()

        def wire():  # in the child: its fds 3 and 4 become the pipes' ends (by way of fds above both)
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome, from_chrome)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-pipe",
                f"--window-size={WIDTH},{HEIGHT}",
                "about:blank",
            ],
            pass_fds=(3, 4),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire,
        )
        os.close(to_chrome)
        os.close(from_chrome)
        self.pending, self.next_id = b"", 0

    def send(self, method: str, session: str | None = None, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self.pending:
                self.pending += os.read(self._read, 1 << 20)
            raw, self.pending = self.pending.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def main(url: str, email: str, password: str, project: str, task: str, out: str) -> None:
    cookie = session_cookie(url, email, password)
    browser = Browser()
    try:
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        browser.send("Network.enable", session)
        browser.send("Network.setCookie", session, name="sessionid", value=cookie, url=url)
        browser.send(
            "Emulation.setDeviceMetricsOverride", session, width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False
        )
        browser.send("Page.navigate", session, url=f"{url}/projects/{project}/data?tab=0&task={task}")
        deadline = time.time() + 60
        drawn = "document.querySelectorAll('input[type=checkbox], input[type=radio]').length"
        while time.time() < deadline:
            if browser.send("Runtime.evaluate", session, expression=drawn)["result"].get("value", 0) > 0:
                break
            time.sleep(1)
        time.sleep(3)  # the photos
        shot = browser.send("Page.captureScreenshot", session, format="png")["data"]
        Path(out).write_bytes(base64.b64decode(shot))
    finally:
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:7])
