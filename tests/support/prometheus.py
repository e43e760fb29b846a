"""A real Prometheus (Debian's `prometheus` package) on loopback, scraping what a file_sd list
names and evaluating alert rules every second.

    with Prometheus(tmp_path / "prometheus", targets=mesh.targets_file, rules=[RULES]) as prom:
        prom.wait_for(lambda: prom.query("up") ...)
        prom.query('sum(contextmesh_jobs_started_total)')    # the instant vector's samples
        prom.alerts()                                         # /api/v1/alerts

It runs through meshctl.launch (its own process group, killed with the test), with a
temporary config and TSDB; ready once GET /-/ready answers 200.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from meshctl.launch import Child, launch
from tests.support.ports import free_port

__all__ = ["Prometheus", "Sample"]

T = TypeVar("T")

Sample = dict[str, Any]
"""One element of an instant vector: {"metric": {label: value}, "value": [time, "text"]}."""


class Prometheus:
    def __init__(self, workdir: Path, *, targets: Path, rules: Sequence[Path]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "prometheus.yml"
        self._targets = targets
        self._rules = rules
        self._child: Child | None = None

    def _write_config(self) -> None:
        # JSON is YAML: no YAML writer needed for a config this small.
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in self._rules],
            "scrape_configs": [
                {
                    "job_name": "contextmesh",
                    "file_sd_configs": [{"files": [str(self._targets)], "refresh_interval": "1s"}],
                }
            ],
        }
        self.config.write_text(json.dumps(config, indent=2))

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        binary = shutil.which("prometheus")
        assert binary, "Debian's prometheus package is missing (.ci/run installs it)"
        self._child = launch(
            [
                binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            name="prometheus",
            log=self.workdir / "prometheus.log",
        )
        self._child.wait_ready(self._ready, 30.0, interval=0.1)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop(10.0)
            self._child = None

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a successful answer of the HTTP API (/api/v1/...)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as reply:
            answer = json.load(reply)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, promql: str) -> list[Sample]:
        """The samples of an instant query now."""
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def value(self, promql: str) -> float | None:
        """The value of a query that yields one sample, None when it yields none."""
        samples = self.query(promql)
        assert len(samples) <= 1, samples
        return float(samples[0]["value"][1]) if samples else None

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.api("alerts")["alerts"])

    def wait_for(self, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
        """probe()'s first truthy answer, polled; AssertionError, with the log, after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            answer = probe()
            if answer:
                return answer
            if time.monotonic() > deadline:
                log = self._child.output_tail() if self._child is not None else ""
                raise AssertionError(f"Prometheus never answered as expected; its log:\n{log}")
            time.sleep(0.2)

    def __enter__(self) -> Prometheus:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
