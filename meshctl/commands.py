"""The client commands: refresh, job, jobs, schedule, callback, cancel, bundle, search,
deadletters, forget, gc, token. They talk gRPC only.

Every call carries a bearer token: CONTEXTMESH_TOKEN when set, else the admin token that
`contextmesh up` keeps in its data directory (CONTEXTMESH_DATA_DIR, default .contextmesh),
so the person who ran `up` needs no setup. `deadletters`, `forget` and `gc` talk to the admin
listener (CONTEXTMESH_ADMIN_TARGET, default localhost:50053). With OTEL_EXPORTER_OTLP_ENDPOINT set,
a command's calls are client spans that start the request's trace (meshkit.telemetry).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import grpc
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from contextmesh.job.v1 import job_pb2
from contextmesh.ops.v1 import ops_service_pb2 as ops
from contextmesh.ops.v1 import ops_service_pb2_grpc
from google.protobuf import duration_pb2, json_format

from meshctl.progress import (
    bundle_line,
    callback_line,
    history_line,
    progress_line,
    schedule_line,
    summary,
)
from meshkit.bearer import bearer_channel
from meshkit.signing import LocalSigner
from meshkit.telemetry import init_tracing

__all__ = ["add_parsers"]

JobState = job_pb2.JobState
FAILED_STATES = (JobState.JOB_STATE_FAILED, JobState.JOB_STATE_CANCELLED)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("refresh", help="refresh a user's bundle")
    p.add_argument("user")
    p.add_argument("--force", action="store_true", help="re-sync every repository")
    p.add_argument("--watch", action="store_true", help="follow the job to its end")
    p.set_defaults(run=refresh)
    p = sub.add_parser("job", help="show a job")
    p.add_argument("id")
    p.add_argument("--watch", action="store_true", help="follow the job to its end")
    p.set_defaults(run=job)
    p = sub.add_parser("jobs", help="a user's recent jobs, newest first")
    p.add_argument("user")
    p.add_argument("-n", "--limit", type=int, default=20, help="how many (default 20)")
    p.set_defaults(run=jobs)
    p = sub.add_parser("schedule", help="show, set or stop a user's scheduled refreshes")
    p.add_argument("user")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--every", metavar="INTERVAL", help="refresh every INTERVAL, e.g. 6h, 1d")
    when.add_argument("--off", action="store_true", help="stop the scheduled refreshes")
    p.set_defaults(run=schedule)
    p = sub.add_parser("callback", help="show, set or stop a user's job-end notifications")
    p.add_argument("user")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--url", help="POST a signed summary to URL when a job of the user ends")
    where.add_argument("--off", action="store_true", help="stop the notifications")
    p.set_defaults(run=callback)
    p = sub.add_parser("cancel", help="cancel a job")
    p.add_argument("id")
    p.set_defaults(run=cancel)
    p = sub.add_parser("bundle", help="show a user's latest bundle")
    p.add_argument("user")
    p.add_argument(
        "--download", metavar="FILE", help="write the full bundle JSON to FILE ('-': stdout)"
    )
    p.set_defaults(run=bundle)
    p = sub.add_parser("search", help="which of a user's repositories match a query")
    p.add_argument("user")
    p.add_argument("query")
    p.add_argument("-k", "--top-k", type=int, default=5)
    p.set_defaults(run=search)
    p = sub.add_parser("deadletters", help="list parked tasks, or redrive one (admin)")
    p.add_argument(
        "--redrive", type=int, metavar="SEQ", help="re-run a parked task's work in a new job"
    )
    p.set_defaults(run=deadletters)
    p = sub.add_parser("forget", help="erase everything held about a user (admin)")
    p.add_argument("user")
    p.set_defaults(run=forget)
    p = sub.add_parser(
        "gc", help="delete blobs no kept bundle, pointer or running job needs (admin)"
    )
    p.add_argument("--dry-run", action="store_true", help="report what would go, delete nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="list the keys too")
    p.set_defaults(run=gc)
    p = sub.add_parser("token", help="print a token signed with the local `up` signing key")
    p.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="NAME",
        help="a GitHub user the token may act for (repeat for more)",
    )
    p.add_argument("--admin", action="store_true", help="admin scope: the admin plane too")
    p.add_argument("--ttl", default="1h", help="lifetime: seconds, or e.g. 30m, 12h, 7d")
    p.add_argument(
        "--data-dir",
        default=None,
        help="the data directory of `up` (env CONTEXTMESH_DATA_DIR, default .contextmesh)",
    )
    p.set_defaults(run=token)


def target() -> str:
    return os.environ.get("CONTEXTMESH_TARGET", "localhost:50051")


def admin_target() -> str:
    return os.environ.get("CONTEXTMESH_ADMIN_TARGET", "localhost:50053")


def data_dir(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("CONTEXTMESH_DATA_DIR") or ".contextmesh")


def caller_token() -> str | None:
    """CONTEXTMESH_TOKEN, else the admin token of a local `up`, else None (the server
    then answers UNAUTHENTICATED, saying how to get one)."""
    if env := os.environ.get("CONTEXTMESH_TOKEN", "").strip():
        return env
    path = data_dir() / "auth" / "admin.token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _channel(to: str) -> grpc.Channel:
    """An authenticated channel; with OTEL_* tracing set, its calls start the trace (the SDK
    exports what is left when the command exits)."""
    init_tracing("contextmesh-cli")
    return bearer_channel(to, caller_token())


def _stub() -> bundle_service_pb2_grpc.BundleServiceStub:
    return bundle_service_pb2_grpc.BundleServiceStub(_channel(target()))


def _follow(stub: bundle_service_pb2_grpc.BundleServiceStub, job_id: str) -> job_pb2.Job:
    """Print progress until the job ends; reconnect if the stream is cut. The moment the
    bundle is ready gets a line of its own: the refresh is done, training follows it."""
    tty = sys.stdout.isatty()
    last_line = ""
    said_ready = False
    while True:
        final: job_pb2.Job | None = None
        try:
            for update in stub.WatchJob(pb.WatchJobRequest(id=job_id)):
                if update.bundle_ready and not said_ready:
                    said_ready = True
                    ready = bundle_line(update.job)
                    print(f"\r\033[K{ready}" if tty else ready, flush=True)
                    last_line = ""
                line = progress_line(update.job)
                if line != last_line:
                    print(f"\r\033[K{line}" if tty else line, end="" if tty else "\n", flush=True)
                    last_line = line
                if update.final:
                    final = update.job
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
        if final is not None:
            if tty:
                print()
            return final
        # No final message: the stream was cut (gateway restart); watch again.


def refresh(args: argparse.Namespace) -> int:
    stub = _stub()
    answer = stub.RefreshBundle(pb.RefreshBundleRequest(user=args.user, force=args.force))
    note = " (already running)" if answer.coalesced else ""
    print(f"job {answer.job.id}{note}")
    if not args.watch:
        return 0
    final = _follow(stub, answer.job.id)
    print(summary(final))
    return 1 if final.state in FAILED_STATES else 0


def job(args: argparse.Namespace) -> int:
    stub = _stub()
    if args.watch:
        final = _follow(stub, args.id)
        print(summary(final))
        return 1 if final.state in FAILED_STATES else 0
    print(summary(stub.GetJob(pb.GetJobRequest(id=args.id)).job))
    return 0


def jobs(args: argparse.Namespace) -> int:
    stub = _stub()
    left, token = args.limit, ""
    while left > 0:
        page = stub.ListJobs(
            pb.ListJobsRequest(user=args.user, page_size=min(left, 100), page_token=token)
        )
        for listed in page.jobs:
            print(history_line(listed))
        left -= len(page.jobs)
        token = page.next_page_token
        if not token:
            break
    return 0


def schedule(args: argparse.Namespace) -> int:
    stub = _stub()
    if args.off:
        stub.DeleteSchedule(pb.DeleteScheduleRequest(user=args.user))
        print(f"{args.user}: no scheduled refreshes")
        return 0
    if args.every:
        try:
            interval = duration_pb2.Duration(seconds=parse_duration(args.every, "--every"))
        except ValueError as exc:
            print(f"contextmesh schedule: {exc}", file=sys.stderr)
            return 2
        answer = stub.SetSchedule(pb.SetScheduleRequest(user=args.user, interval=interval))
        print(schedule_line(answer.schedule))
        return 0
    print(schedule_line(stub.GetSchedule(pb.GetScheduleRequest(user=args.user)).schedule))
    return 0


def callback(args: argparse.Namespace) -> int:
    stub = _stub()
    if args.off:
        stub.DeleteCallback(pb.DeleteCallbackRequest(user=args.user))
        print(f"{args.user}: no notifications")
        return 0
    if args.url:
        answer = stub.SetCallback(pb.SetCallbackRequest(user=args.user, url=args.url))
        print(callback_line(answer.callback))
        print(
            f"signing secret (shown once; setting the callback again rotates it): {answer.secret}"
        )
        return 0
    print(callback_line(stub.GetCallback(pb.GetCallbackRequest(user=args.user)).callback))
    return 0


def cancel(args: argparse.Namespace) -> int:
    print(summary(_stub().CancelJob(pb.CancelJobRequest(id=args.id)).job))
    return 0


def bundle(args: argparse.Namespace) -> int:
    stub = _stub()
    if args.download:
        out = sys.stdout.buffer if args.download == "-" else open(args.download, "wb")  # noqa: SIM115
        for chunk in stub.DownloadBundle(pb.DownloadBundleRequest(user=args.user)):
            out.write(chunk.data)
        out.flush()
        if out is not sys.stdout.buffer:
            out.close()
        return 0
    answer = stub.GetBundle(pb.GetBundleRequest(user=args.user))
    print(
        f"bundle {answer.bundle.content_hash} ({answer.bundle.repositories} repositories, "
        f"{answer.bundle.size_bytes} bytes) from job {answer.job_id}"
    )
    for repo in answer.repositories:
        status = job_pb2.RepoStatus.Name(repo.status).removeprefix("REPO_STATUS_").lower()
        extra = f" — {repo.reason}" if repo.reason else ""
        warn = f" ({len(repo.warnings)} warnings)" if repo.warnings else ""
        print(f"  {status:<9} {repo.repository}{warn}{extra}")
    return 0


def search(args: argparse.Namespace) -> int:
    answer = _stub().SearchBundle(
        pb.SearchBundleRequest(user=args.user, query=args.query, top_k=args.top_k)
    )
    model = "tuned model" if answer.tuned else "base model"
    print(f"{len(answer.hits)} results ({model}, bundle {answer.bundle_hash[:12]})")
    for rank, hit in enumerate(answer.hits, 1):
        passage = " ".join(hit.passage.split())
        print(
            f"{rank}. {hit.repository}  {hit.score:.3f}\n   [{hit.passage_source}] "
            f"{passage[:160]}{'…' if len(passage) > 160 else ''}"
        )
    return 0


def deadletters(args: argparse.Namespace) -> int:
    stub = ops_service_pb2_grpc.OpsServiceStub(_channel(admin_target()))
    if args.redrive is not None:
        answer = stub.RedriveDeadLetter(ops.RedriveDeadLetterRequest(sequence=args.redrive))
        print(
            f"dead letter {args.redrive} (job {answer.task.job_id}) redriven as job {answer.job.id}"
        )
        return 0
    token = ""
    while True:
        page = stub.ListDeadLetters(ops.ListDeadLettersRequest(page_token=token))
        for task in page.tasks:
            print(json.dumps(json_format.MessageToDict(task)))
        token = page.next_page_token
        if not token:
            return 0


def forget(args: argparse.Namespace) -> int:
    stub = ops_service_pb2_grpc.OpsServiceStub(_channel(admin_target()))
    answer = stub.DeleteUser(ops.DeleteUserRequest(user=args.user))
    print(
        f"forgot {args.user}: {answer.jobs} jobs, {answer.blobs} blobs, "
        f"{answer.dead_letters} dead letters"
    )
    return 0


def gc(args: argparse.Namespace) -> int:
    stub = ops_service_pb2_grpc.OpsServiceStub(_channel(admin_target()))
    answer = stub.CollectGarbage(
        ops.CollectGarbageRequest(dry_run=args.dry_run, list_keys=args.verbose)
    )
    verb = "would delete" if answer.dry_run else "deleted"
    for kind in answer.kinds:
        print(f"{verb} {kind.count} {kind.kind} blobs, {kind.bytes} bytes")
        for key in kind.keys if args.verbose else ():
            print(f"  {key}")
        if args.verbose and kind.count > len(kind.keys):
            print(f"  ... and {kind.count - len(kind.keys)} more")
    if answer.spared:
        print(f"kept {answer.spared} blobs a refresh started to use while the sweep ran")
    return 0


_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, option: str) -> int:
    """Seconds from '90', '30m', '12h' or '7d'; ValueError naming option otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(
            f"{option}: expected a positive number of seconds or e.g. 30m, 12h, 7d; got {text!r}"
        )
    return int(match.group(1)) * _UNITS[match.group(2)]


def token(args: argparse.Namespace) -> int:
    if not args.user and not args.admin:
        print("contextmesh token: name at least one --user, or pass --admin", file=sys.stderr)
        return 2
    try:
        ttl = parse_duration(args.ttl, "--ttl")
        signer = LocalSigner.open(data_dir(args.data_dir) / "auth", create=False)
    except (ValueError, FileNotFoundError) as exc:
        print(f"contextmesh token: {exc}", file=sys.stderr)
        return 2
    users = args.user or (["*"] if args.admin else [])
    print(signer.mint(users=users, admin=args.admin, ttl_s=ttl))
    return 0
