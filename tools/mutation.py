"""Mutation testing (cosmic-ray) of the decision points that carry the mesh's guarantees.

    python tools/mutation.py                  every target
    python tools/mutation.py fan-in worker    the named targets
    python tools/mutation.py --changed        the targets whose module changed since the merge
                                              base with origin/main (or main)
    python tools/mutation.py --changed REF    ... since the merge base with REF

Each target is one module, the functions in it that make the decision, and the few in-process
tests that exercise them. Only mutants inside those functions are run, one at a time (cosmic-ray
edits the module in place and runs the tests as a subprocess), and the module is restored
afterwards whatever happens. Prints killed/survived per target and every survivor; exits 1 when
a survivor is not one of the EQUIVALENT mutants that docs/testing.md explains.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Target:
    name: str
    module: str
    """The file mutated, relative to the repository root."""
    functions: tuple[str, ...]
    """Qualified names (Class.method) of the functions whose mutants are run."""
    tests: tuple[str, ...]
    """The tests run against each mutant: in-process ones that exercise these functions."""


TARGETS = (
    Target(
        "publish-gate",
        "trainsvc/evaluate.py",
        ("beats", "loses_paraphrases"),
        (
            "tests/train/test_evaluate.py",
            "tests/train/test_publish_gate_mutants.py::test_a_gain_of_exactly_the_margin_is_not_enough",
            "tests/train/test_publish_gate_mutants.py::test_a_paraphrase_loss_of_exactly_the_margin_is_float_noise",
        ),
    ),
    Target(
        "publish-gate-pipeline",
        "trainsvc/pipeline.py",
        ("train_on_bundle",),
        ("tests/train/test_publish_gate_mutants.py",),
    ),
    Target(
        "bundle-pointer",
        "mergesvc/merge.py",
        ("move_bundle_pointer",),
        (
            "tests/merge/test_bundle_pointer_mutants.py",
            "tests/runtime/test_pointers.py",
            "tests/merge/test_merge_handler.py",
        ),
    ),
    Target(
        "model-pointer",
        "trainsvc/pointers.py",
        ("latest_bundle_hash", "move_model_pointer", "_same_model"),
        ("tests/train/test_model_pointer_mutants.py",),
    ),
    Target(
        "pointer-read",
        "meshkit/domain/pointers.py",
        (
            "_outside",
            "bundle_pointer_problem",
            "model_pointer_problem",
            "read_message",
            "read_bundle_pointer",
            "read_model_pointer",
        ),
        ("tests/runtime/test_pointers.py",),
    ),
    Target(
        "fan-in",
        "syncsvc/fanin.py",
        ("bit_is_set", "FanIn._store", "FanIn.stored", "FanIn.record", "FanIn.merge_if_complete"),
        ("tests/sync/test_fanin_mutants.py", "tests/sync/test_fanin.py"),
    ),
    Target(
        "coalescing",
        "gateway/refresh.py",
        (
            "Refresher.refresh",
            "Refresher._active",
            "Refresher._claim_and_create",
            "Refresher._refreshing",
            "Refresher._claim",
        ),
        (
            "tests/gateway/test_refresh_mutants.py",
            "tests/gateway/test_refresh.py",
            "tests/gateway/test_refresh_path.py",
        ),
    ),
    Target(
        "cancellation",
        "meshkit/jobs.py",
        ("is_final", "is_refreshing", "JobStore.end"),
        (
            "tests/runtime/test_job_end_mutants.py",
            "tests/runtime/test_jobs.py",
            "tests/sync/test_fanin.py",
        ),
    ),
    Target(
        "cancellation-sync",
        "syncsvc/handler.py",
        ("SyncHandler.handle", "_mark_discovering"),
        (
            "tests/sync/test_discover_mark_mutants.py",
            "tests/sync/test_sync_handler.py",
            "tests/sync/test_discover_handler.py",
        ),
    ),
    Target(
        "redrive",
        "gateway/redrive.py",
        (
            "read_letter",
            "Redriver.redrive",
            "Redriver._task",
            "Redriver._claimed",
            "Redriver._claim",
            "Redriver._start",
            "Redriver._inherit",
            "Redriver._train",
            "Redriver._again",
            "Redriver._publish_train",
            "Redriver._forget_letter",
        ),
        ("tests/gateway/test_redrive_mutants.py", "tests/gateway/test_redrive.py"),
    ),
    Target(
        "worker",
        "meshkit/worker.py",
        ("Delivery.is_last", "park", "Worker._handle", "Worker._dead_letter"),
        (
            "tests/runtime/test_worker_mutants.py",
            "tests/runtime/test_worker.py",
            "tests/runtime/test_worker_handler.py",
            "tests/runtime/test_metrics.py::test_a_worker_counts_each_delivery_under_its_outcome",
            "tests/runtime/test_metrics.py::test_a_task_parked_by_every_replica_counts_as_one_dead_letter",
        ),
    ),
    Target(
        "authorization",
        "meshkit/auth.py",
        (
            "Principal.may_act_for",
            "authorize_job",
            "_principal_of",
            "AuthInterceptor.applies",
            "AuthInterceptor._admit",
            "AuthInterceptor.wrap",
        ),
        (
            "tests/auth/test_authorization_mutants.py",
            "tests/auth/test_server_rules.py",
            "tests/auth/test_gateway_auth.py",
        ),
    ),
    Target(
        "retention-fence",
        "meshkit/domain/retention_fence.py",
        ("RetentionFence.keep", "RetentionFence._hold", "RetentionFence._released"),
        ("tests/gateway/test_retention_mutants.py", "tests/gateway/test_retention.py"),
    ),
    Target(
        "retention-sweep",
        "gateway/retention.py",
        (
            "RetentionSweep.run",
            "RetentionSweep._live",
            "RetentionSweep._delete",
            "_newest_indexes",
        ),
        ("tests/gateway/test_retention_mutants.py", "tests/gateway/test_retention.py"),
    ),
)

EQUIVALENT: dict[tuple[str, str, str], str] = {
    (
        "retention-fence",
        "core/ReplaceContinueWithBreak",
        "continue  # released between our create and our read: try again",
    ): (
        "reached only when a sweep releases the hold between the writer's create and read; "
        "the mutant then takes the blob for lost, and the writer stores it again or plans "
        "its repository stale: as safe, one write more"
    ),
    (
        "retention-sweep",
        "core/ReplaceBinaryOperator_Mul_Div",
        "async def run(self, *, dry_run: bool) -> SweepReport:",
    ): "run's keyword-only marker made positional-only: every caller passes dry_run by name",
    (
        "retention-sweep",
        "core/ReplaceComparisonOperator_Gt_GtE",
        "if time.time() - started > self.settings.lease_s:",
    ): "stopping at the lease's very instant or just after it: the clock never lands on it",
    ("retention-sweep", "core/ReplaceBreakWithContinue", "break"): (
        "once the lease is over, every later chunk finds it over too and deletes nothing: "
        "continuing to the end deletes what stopping does"
    ),
    (
        "retention-sweep",
        "core/ReplaceComparisonOperator_Gt_GtE",
        'if job_id > newest[user].get(digest, ""):',
    ): "a listing holds each key once, so a bundle never has two indexes of the same job",
    (
        "retention-sweep",
        "core/ReplaceTrueWithFalse",
        "for key, gone in zip(chunk, await asyncio.gather(*map(one, chunk)), strict=True):",
    ): "gather returns one result per key of the chunk: the lengths are always equal",
    (
        "retention-sweep",
        "core/NumberReplacer",
        'deleted[key.split("/", 1)[0]].add(key, candidates[key])',
    ): "any number of splits gives the same first segment, the key's kind",
    (
        "retention-sweep",
        "core/ReplaceOrWithAnd",
        'if len(parts) != 4 or parts[0] != "bundles" or not parts[3].endswith(".index.binpb"):',
    ): (
        "of the four-segment keys the sweep lists, those under bundles/ are all indexes and "
        "none elsewhere ends in .index.binpb (docs/architecture.md, Blob layout)"
    ),
    (
        "retention-fence",
        "core/ReplaceComparisonOperator_Gt_GtE",
        "if loop.time() > deadline:",
    ): (
        "giving up on a doomed hold at the deadline's very instant or just after it: the "
        "loop's clock never lands on it exactly"
    ),
    ("cancellation", "core/ReplaceBinaryOperator_Mul_Div", "*,"): (
        "JobStore.end's keyword-only marker made positional-only: every caller passes "
        "those arguments as it did"
    ),
    ("publish-gate-pipeline", "core/ReplaceBinaryOperator_Mul_Div", "*,"): (
        "train_on_bundle's keyword-only marker made positional-only: every caller passes "
        "those arguments as it did"
    ),
    (
        "bundle-pointer",
        "core/ReplaceTrueWithFalse",
        "value = pointer.SerializeToString(deterministic=True)",
    ): "BundlePointer has no map field: deterministic serialization changes no byte of it",
    ("bundle-pointer", "core/NumberReplacer", "for _ in range(50):"): (
        "49 or 51 attempts instead of 50: only 49 lost races in a row could tell them apart"
    ),
    (
        "model-pointer",
        "core/ReplaceTrueWithFalse",
        "value = pointer.SerializeToString(deterministic=True)",
    ): "ModelPointer has no map field: deterministic serialization changes no byte of it",
    ("worker", "core/ReplaceBinaryOperator_Mul_Div", "*,"): (
        "park's keyword-only marker made positional-only: every caller passes those "
        "arguments as it did"
    ),
    (
        "worker",
        "core/NumberReplacer",
        "heartbeat = asyncio.create_task(self._heartbeat(msg, self.ws.ack_wait_s / 3))",
    ): (
        "in-progress every half or quarter of the ack wait instead of every third: each "
        "still comes before the ack wait ends"
    ),
    (
        "redrive",
        "core/ReplaceAndWithOr",
        "return entry.value.decode() if entry is not None and entry.value else None",
    ): "a claim is never stored empty, and a missing one raises instead of reading as None",
    (
        "coalescing",
        "core/ReplaceBinaryOperator_Mul_Div",
        "async def refresh(self, user: str, *, force: bool) -> tuple[job_pb2.Job, bool]:",
    ): "Refresher.refresh's keyword-only marker made positional-only: callers pass force by name",
    ("coalescing", "core/NumberReplacer", "for _ in range(20):"): (
        "19 or 21 attempts instead of 20: only 19 lost races in a row could tell them apart"
    ),
    ("coalescing", "core/NumberReplacer", "for attempt in range(2):"): (
        "a third read of a missing record, with no wait before it, answers as the second did"
    ),
    ("coalescing", "core/NumberReplacer", "await asyncio.sleep(0.05)"): (
        "a late record waited for 1.05 s instead of 0.05 s: the same answer, a second later"
    ),
    (
        "authorization",
        "core/ReplaceAndWithOr",
        "assert rule is not None and self.authenticator is not None",
    ): "context.abort raises above it: the assert only narrows the types for mypy",
    (
        "fan-in",
        "core/ReplaceTrueWithFalse",
        "await self.outcomes.create(key, outcome.SerializeToString(deterministic=True))",
    ): "RepoOutcome has no map field: deterministic serialization changes no byte of it",
    (
        "fan-in",
        "core/NumberReplacer",
        "*(self._store(job_id, o) for o in outcomes[start : start + 64])",
    ): (
        "batches of 65 taken every 64 overlap by one outcome, which is stored once "
        "(create-only) and counted once (the bitmap)"
    ),
    ("fan-in", "core/NumberReplacer", "for start in range(0, len(outcomes), 64):"): (
        "batches of 64 taken every 63 overlap by one outcome, which is stored once "
        "(create-only) and counted once (the bitmap)"
    ),
    ("authorization", "core/AddNot", "if handler.stream_stream:"): (
        "a client-streaming method registered as the other client-streaming kind: its "
        "handler aborts before reading or answering, so the caller gets PERMISSION_DENIED"
    ),
}
"""Survivors that no test can kill, by (target, operator, mutated line's source): each one is
explained in docs/testing.md under "Mutation testing"."""


Position = tuple[int, int]
"""(line, column) as cosmic-ray and ast count them: lines from 1, columns from 0."""


@dataclass(frozen=True)
class Spans:
    """Where a target's mutants may be: inside its functions, outside every annotation."""

    functions: list[tuple[int, int]]
    """The first and last line of each named function."""
    annotations: list[tuple[Position, Position]]
    """Type annotations: never evaluated here (`from __future__ import annotations`), so a
    mutant of `str | None` would survive every test."""

    def admit(self, start: Position) -> bool:
        line = start[0]
        return any(first <= line <= last for first, last in self.functions) and not any(
            begin <= start < end for begin, end in self.annotations
        )


def decision_spans(source: str, qualified: Sequence[str]) -> Spans:
    """The Spans of the named functions; KeyError names one that is missing."""
    tree = ast.parse(source)
    found: dict[str, tuple[int, int]] = {}

    def visit(nodes: Iterable[ast.stmt], prefix: str) -> None:
        for node in nodes:
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found[f"{prefix}{node.name}"] = (node.lineno, node.end_lineno or node.lineno)

    visit(tree.body, "")
    missing = [name for name in qualified if name not in found]
    if missing:
        raise KeyError(f"no function {', '.join(missing)}")
    annotations = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
            annotations.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns:
            annotations.append(node.returns)
    return Spans(
        [found[name] for name in qualified],
        [
            ((a.lineno, a.col_offset), (a.end_lineno or a.lineno, a.end_col_offset or 0))
            for a in annotations
        ],
    )


def changed_targets(ref: str) -> tuple[list[Target], str]:
    """The targets whose module differs between the merge base with ref and the work tree."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout.strip()

    base = git("merge-base", ref, "HEAD")
    note = f"changed since {base[:12]} (merge base with {ref})"
    if base == git("rev-parse", "HEAD"):
        # On the branch itself (CI's clone of main): what its last commit changed.
        parent = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", "HEAD^"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if parent.returncode != 0:
            return [], f"changed: none to compare (HEAD is on {ref} and has no parent here)"
        base = parent.stdout.strip()
        note = f"changed by the last commit (HEAD is on {ref})"
    changed = set(git("diff", "--name-only", base).splitlines())
    return [t for t in TARGETS if t.module in changed], note


def default_ref() -> str:
    for ref in ("origin/main", "main"):
        probe = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", ref], cwd=ROOT, capture_output=True
        )
        if probe.returncode == 0:
            return ref
    raise SystemExit("--changed needs a ref: neither origin/main nor main exists")


PYTEST = ("-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly")
"""-x: a mutant is killed by its first failing test. no:randomly: a mutant's verdict must not
depend on the order its tests ran in."""


def test_command(target: Target) -> str:
    return " ".join([sys.executable, *PYTEST, *target.tests])


def write_config(target: Target, path: Path, timeout_s: float) -> None:
    # TOML basic strings accept JSON's escapes; json.dumps quotes every value.
    path.write_text(
        "[cosmic-ray]\n"
        f"module-path = {json.dumps(target.module)}\n"
        f"timeout = {timeout_s:.0f}\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(test_command(target))}\n"
        "\n[cosmic-ray.distributor]\n"
        'name = "local"\n'
    )


COUNTERPART = {
    # binary operators
    "Add": "Sub",
    "Sub": "Add",
    "Mul": "Div",
    "Div": "Mul",
    "FloorDiv": "Mul",
    "Mod": "FloorDiv",
    "Pow": "Mul",
    "LShift": "RShift",
    "RShift": "LShift",
    "BitOr": "BitAnd",
    "BitAnd": "BitOr",
    "BitXor": "BitOr",
    # comparisons: the boundary moved by one, or the test negated
    "Lt": "LtE",
    "LtE": "Lt",
    "Gt": "GtE",
    "GtE": "Gt",
    "Eq": "NotEq",
    "NotEq": "Eq",
    "Is": "IsNot",
    "IsNot": "Is",
    "In": "NotIn",
    "NotIn": "In",
}
"""The one replacement kept for each operator. cosmic-ray makes eleven of every `a + b` and
seven of every `a < b`; the others are killed by whatever kills this one (a swapped operator
breaks far more than a moved boundary) and would make the run several times longer."""


def worth_running(operator: str) -> bool:
    kind, _, change = operator.partition("_")
    if kind not in ("core/ReplaceBinaryOperator", "core/ReplaceComparisonOperator"):
        return True
    original, _, replacement = change.partition("_")
    return COUNTERPART.get(original) == replacement


def skip_outside(session: Path, spans: Spans) -> None:
    """Mark skipped every mutant outside the decision points, and the operator replacements
    other than COUNTERPART's, so `exec` does not run them."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    with use_db(str(session), WorkDB.Mode.open) as db:
        outside = [
            item.job_id
            for item in db.pending_work_items
            if not all(
                spans.admit(tuple(m.start_pos)) and worth_running(m.operator_name)
                for m in item.mutations
            )
        ]
        if outside:
            db.set_multiple_results(
                outside,
                WorkResult(output="not a decision point", worker_outcome=WorkerOutcome.SKIPPED),
            )


@dataclass
class Survivor:
    line: int
    operator: str
    source: str
    diff: str
    explained: str | None


@dataclass
class Verdict:
    target: Target
    killed: int
    survivors: list[Survivor]
    errors: list[str]
    """Mutants cosmic-ray could not run (or whose tests could not start)."""
    seconds: float


def baseline(target: Target) -> float:
    """Run the tests once unmutated; their time (a failing baseline makes verdicts void)."""
    started = time.monotonic()
    run = subprocess.run(test_command(target).split(), cwd=ROOT, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"{target.name}: the tests fail unmutated:\n{run.stdout[-3000:]}")
    return time.monotonic() - started


def run_target(target: Target, workdir: Path) -> Verdict:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    module = ROOT / target.module
    original = module.read_bytes()
    started = time.monotonic()
    # A mutant that hangs (a retry loop made endless) is killed by the timeout.
    timeout_s = max(60.0, 4 * baseline(target))
    config, session = workdir / f"{target.name}.toml", workdir / f"{target.name}.sqlite"
    write_config(target, config, timeout_s)
    spans = decision_spans(original.decode(), target.functions)
    try:
        subprocess.run([BIN / "cosmic-ray", "init", config, session], cwd=ROOT, check=True)
        skip_outside(session, spans)
        subprocess.run([BIN / "cosmic-ray", "exec", config, session], cwd=ROOT, check=True)
    finally:
        if module.read_bytes() != original:
            module.write_bytes(original)
    source_lines = original.decode().splitlines()
    killed, survivors, errors = 0, [], []
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            mutation = item.mutations[0]
            line = mutation.start_pos[0]
            text = source_lines[line - 1].strip()
            if result.worker_outcome != WorkerOutcome.NORMAL or result.test_outcome not in (
                TestOutcome.KILLED,
                TestOutcome.SURVIVED,
            ):
                outcome = result.test_outcome or result.worker_outcome
                errors.append(f"line {line} {mutation.operator_name}: {outcome}")
                continue
            if result.test_outcome == TestOutcome.KILLED:
                killed += 1
                continue
            survivors.append(
                Survivor(
                    line,
                    mutation.operator_name,
                    text,
                    result.diff or "",
                    EQUIVALENT.get((target.name, mutation.operator_name, text)),
                )
            )
    return Verdict(target, killed, survivors, errors, time.monotonic() - started)


def report(verdicts: Sequence[Verdict]) -> bool:
    """Print the summary and every survivor; True when every survivor is explained."""
    print(f"\n{'target':<24}{'module':<30}{'mutants':>8}{'killed':>8}{'survived':>9}{'s':>7}")
    for v in verdicts:
        total = v.killed + len(v.survivors) + len(v.errors)
        print(
            f"{v.target.name:<24}{v.target.module:<30}{total:>8}{v.killed:>8}"
            f"{len(v.survivors):>9}{v.seconds:>7.0f}"
        )
    clean = True
    for v in verdicts:
        for error in v.errors:
            clean = False
            print(f"\n{v.target.name} {v.target.module}: not run: {error}")
        for s in v.survivors:
            verdict = f"equivalent: {s.explained}" if s.explained else "UNEXPLAINED"
            clean &= s.explained is not None
            print(f"\n{v.target.name} {v.target.module}:{s.line} {s.operator} ({verdict})")
            print(s.diff.rstrip())
    sys.stdout.flush()
    return clean


@contextlib.contextmanager
def hold_lock() -> Iterator[None]:
    """cosmic-ray edits modules in place: a second run in this work tree would read a mutant
    as the original (and restore it). Exits when one holds the lock (in the git dir)."""
    path = subprocess.run(
        ["git", "rev-parse", "--git-path", "mutation.lock"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with open(ROOT / path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit("another tools/mutation.py is running in this work tree") from None
        yield


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="target names (default: all)")
    parser.add_argument(
        "--changed",
        nargs="?",
        const="",
        metavar="REF",
        help="only targets whose module changed since the merge base with REF",
    )
    args = parser.parse_args(argv)
    by_name = {t.name: t for t in TARGETS}
    unknown = [n for n in args.targets if n not in by_name]
    if unknown:
        parser.error(f"unknown target {', '.join(unknown)}; known: {', '.join(by_name)}")
    targets = [by_name[n] for n in args.targets] or list(TARGETS)
    with hold_lock():  # before --changed reads the tree
        if args.changed is not None:
            changed, note = changed_targets(args.changed or default_ref())
            targets = [t for t in targets if t in changed]
            print(
                f"mutation: target modules {note}: {', '.join(t.module for t in targets) or 'none'}"
            )
            if not targets:
                return 0
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), str(ROOT / "gen"), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        verdicts = []
        with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
            for target in targets:
                verdicts.append(run_target(target, Path(tmp)))
                report(verdicts[-1:])  # as each target ends: a long run is read as it goes
    print("\n== all targets")
    return 0 if report(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
