"""Replays a day of refreshes against the per-unit costs measured here: what docs/capacity.md sizes.

    .venv/bin/python bench/capacity_model.py --users 10000
    .venv/bin/python bench/capacity_model.py --users 1000000 --repos 40 --changed 0.1

Every user refreshes once a day (schedules, or pushes debounced into one job), at a minute drawn
from a day-shaped curve (quiet at night, busiest in the afternoon, about twice the mean at its
peak). Each refresh lists the user's repositories and re-syncs the changed ones; a user with any
change gets a new bundle and a training. Per minute the replay adds up what the measured unit
costs say that work needs, and reports the busiest minute (what sync replicas and NATS must
absorb), the day's totals (GitHub requests, GPU seconds) and storage after a month.

The unit costs are the medians of bench/capacity_probe.py and bench/gpu_train.sh
(docs/benchmarks.md); the capacities (GitHub's budget per credential, what one NATS server
persists a second) are GitHub's documented limits and a deliberately low planning figure, not
measurements: each is a flag, so a measured one can replace it.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import numpy as np

MINUTES = 24 * 60


@dataclass(frozen=True)
class UnitCosts:
    """What one unit of work costs, as measured (docs/capacity.md says where each is from)."""

    sync_cpu_ms_changed: float = 16.0
    """CPU of every service together per re-synced repository (gateway, sync, merge)."""
    sync_cpu_ms_unchanged: float = 0.5
    """CPU per repository of a refresh that finds it unchanged."""
    messages_changed: float = 6.3
    """JetStream messages (tasks, KV writes) per re-synced repository."""
    messages_unchanged: float = 1.1
    """JetStream messages per unchanged repository (its outcome, the plan's records)."""
    requests_changed: float = 4.0
    """GitHub requests per re-synced repository (one per context file)."""
    repos_per_list_page: int = 100
    """One list request per page of repositories, changed or not."""
    blob_bytes_changed: float = 6_500.0
    """Blob bytes a re-synced repository adds (its result and cached response bodies)."""
    bundle_bytes_per_repo: float = 3_300.0
    """Bytes of a stored bundle per repository in it."""
    kv_bytes_per_repo: float = 1_350.0
    """NATS bytes held per repository after its first sync (cached ETags, its outcome, the
    job record's share), on each server of the cluster."""
    kv_bytes_per_refresh: float = 280.0
    """NATS bytes each further refresh adds per repository (its outcome), kept for the
    outcomes bucket's TTL."""
    model_bytes: float = 90e6
    """A full MiniLM copy per trained bundle (issue 16 replaces it with an adapter)."""
    gpu_s_base: float = 6.25
    """GPU seconds of a training, fixed part (least squares through 10/50/200 repositories:
    5.4/11.7/19.8 s on one H200, bench/gpu_train.sh)."""
    gpu_s_per_repo: float = 0.07
    """GPU seconds of a training per repository of the bundle."""


@dataclass(frozen=True)
class Capacities:
    sync_core_ms_per_s: float = 1000.0
    """One CPU core of a sync replica (each replica gets one)."""
    sync_in_flight: int = 40
    """GitHub requests one sync replica keeps in flight (CONTEXTMESH_SYNC_CONCURRENCY)."""
    github_latency_s: float = 0.25
    """GitHub's time to answer one content request: a planning figure (50 ms in the benches)."""
    nats_messages_per_s: float = 20_000.0
    """Replicated (R3), fsynced writes one NATS cluster absorbs a second: a planning figure."""
    github_requests_per_hour: float = 5_000.0
    """GitHub's primary budget per user token or App installation (at the low end)."""
    outcome_ttl_days: float = 14.0
    """How long cm_outcomes keeps a job's per-repository outcomes (meshkit/topology.py)."""
    headroom: float = 0.5
    """Plan to use at most this share of any capacity at the busiest minute."""


def day_curve() -> np.ndarray:
    """The share of a day's refreshes started in each minute: a night trough at 03:00 and a
    peak about twice the mean at 15:00."""
    minute = np.arange(MINUTES)
    weight = 1.0 + 0.95 * np.cos(2 * np.pi * (minute - 15 * 60) / MINUTES)
    return weight / weight.sum()


def replay(
    *,
    users: int,
    repos: float,
    changed: float,
    keep_bundles: int,
    costs: UnitCosts,
    capacity: Capacities,
    seed: int = 1,
) -> dict[str, float]:
    """One day of `users` daily refreshes of about `repos` repositories each, `changed` of them
    changed since the day before; the sizing that follows (see the module docstring)."""
    rng = np.random.default_rng(seed)
    starts = np.bincount(rng.choice(MINUTES, size=users, p=day_curve()), minlength=MINUTES)
    # Repositories per user vary a lot: a geometric spread with the given mean.
    per_user = rng.geometric(1 / max(repos, 1.0), size=users).astype(float)
    changed_repos = rng.binomial(per_user.astype(int), changed)
    trained = changed_repos > 0
    order = np.repeat(np.arange(MINUTES), starts)

    def per_minute(values: np.ndarray) -> np.ndarray:
        return np.bincount(order, weights=values, minlength=MINUTES)

    unchanged = per_user - changed_repos
    cpu_ms = per_minute(
        changed_repos * costs.sync_cpu_ms_changed + unchanged * costs.sync_cpu_ms_unchanged
    )
    messages = per_minute(
        changed_repos * costs.messages_changed + unchanged * costs.messages_unchanged
    )
    requests = changed_repos * costs.requests_changed + np.ceil(
        per_user / costs.repos_per_list_page
    )
    gpu_s = trained * (costs.gpu_s_base + costs.gpu_s_per_repo * per_user)
    busiest = int(np.argmax(cpu_ms))
    use = capacity.headroom
    # A replica is bound by its core or by waiting on GitHub, whichever is reached first.
    by_cpu = cpu_ms.max() / 60 / (capacity.sync_core_ms_per_s * use)
    repos_per_s = capacity.sync_in_flight / (costs.requests_changed * capacity.github_latency_s)
    by_latency = per_minute(changed_repos.astype(float)).max() / 60 / (repos_per_s * use)

    bundle_bytes = per_user * costs.bundle_bytes_per_repo
    # Held with retention: at most the last `keep_bundles` bundles and models of every user
    # (an upper bound: a user who never changes keeps one) and the results of their repositories.
    kept = float(
        np.sum(
            keep_bundles * (bundle_bytes + costs.model_bytes) + per_user * costs.blob_bytes_changed
        )
    )
    unbounded_month = float(
        30 * np.sum(trained * (bundle_bytes + costs.model_bytes))
        + 30 * np.sum(changed_repos) * costs.blob_bytes_changed
    )
    nats_bytes = float(
        per_user.sum()
        * (costs.kv_bytes_per_repo + costs.kv_bytes_per_refresh * capacity.outcome_ttl_days)
    )
    return {
        "users": users,
        "repositories": float(per_user.sum()),
        "changed_per_day": float(changed_repos.sum()),
        "trainings_per_day": float(trained.sum()),
        "busiest_minute": busiest,
        "sync_replicas": math.ceil(max(by_cpu, by_latency)),
        "nats_messages_per_s_peak": float(messages.max() / 60),
        "nats_clusters": math.ceil(messages.max() / 60 / (capacity.nats_messages_per_s * use)),
        "nats_gb_per_server": nats_bytes / 1e9,
        "github_requests_per_day": float(requests.sum()),
        "shared_credentials": math.ceil(
            requests.sum() / 24 / (capacity.github_requests_per_hour * use)
        ),
        "gpu_hours_per_day": float(gpu_s.sum() / 3600),
        "gpus": math.ceil(gpu_s.sum() / 86_400 / use),
        "storage_kept_tb": kept / 1e12,
        "storage_month_without_retention_tb": unbounded_month / 1e12,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--repos", type=float, default=30, help="mean repositories per user")
    parser.add_argument("--changed", type=float, default=0.05, help="share changed a day")
    parser.add_argument("--keep-bundles", type=int, default=3)
    parser.add_argument("--model-mb", type=float, default=90.0, help="bytes of a user's model")
    args = parser.parse_args()
    costs = UnitCosts(model_bytes=args.model_mb * 1e6)
    rows = [
        replay(
            users=n,
            repos=args.repos,
            changed=args.changed,
            keep_bundles=args.keep_bundles,
            costs=costs,
            capacity=Capacities(),
        )
        for n in args.users
    ]
    print(
        f"mean {args.repos:g} repositories a user, {args.changed:.0%} changed a day, "
        f"the last {args.keep_bundles} bundles kept, {args.model_mb:g} MB a model\n"
    )
    print("| | " + " | ".join(f"{r['users']:,} users" for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for key, label, fmt in (
        ("repositories", "repositories", "{:,.0f}"),
        ("changed_per_day", "re-synced a day", "{:,.0f}"),
        ("trainings_per_day", "trainings a day", "{:,.0f}"),
        ("sync_replicas", "sync replicas (1 core) at the busiest minute", "{:,}"),
        ("nats_messages_per_s_peak", "NATS messages/s at the busiest minute", "{:,.0f}"),
        ("nats_clusters", "3-server NATS clusters", "{:,}"),
        ("nats_gb_per_server", "NATS storage held per server (GB)", "{:,.1f}"),
        ("github_requests_per_day", "GitHub requests a day", "{:,.0f}"),
        ("shared_credentials", "credentials if all share the pool", "{:,}"),
        ("gpu_hours_per_day", "GPU hours a day (H200)", "{:,.1f}"),
        ("gpus", "GPUs (trainings queue through the day)", "{:,}"),
        ("storage_kept_tb", "storage held with retention (TB)", "{:,.2f}"),
        ("storage_month_without_retention_tb", "growth a month without it (TB)", "{:,.2f}"),
    ):
        print(f"| {label} | " + " | ".join(fmt.format(r[key]) for r in rows) + " |")


if __name__ == "__main__":
    main()
