"""Training wall time and peak memory for synthetic bundles, with the real all-MiniLM-L6-v2.

    .venv/bin/python bench/train_bench.py [--sizes 10,50,200] [--runs 3] [--device cpu]

Each run is a fresh child process, so its peak RSS (ru_maxrss) is its own: the child builds a
seeded synthetic bundle of N repositories (shaped like the demo ones: a description, 8 to 12
technologies, 6 to 10 skills, topics, two components, an FAQ entry and a five-section README)
and runs trainsvc's pipeline with the default TrainSettings (CONTEXTMESH_TRAIN_* apply):
pairs, base evaluation, fine-tuning, tuned evaluation, saving the model. Reported per size,
as the median of the runs: the whole pipeline's wall time, the fine-tuning part alone, steps,
pairs, passages, peak RSS, and the held-out MRR@10 of both models. The import of torch
(about 7 s, paid once per trainsvc process) is not counted.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meshkit.domain.documents import Bundle, RepositoryResult  # noqa: E402
from tests.train.support import bundle, repo  # noqa: E402

__all__ = ["synthetic_bundle"]


def _items(text: str) -> list[str]:
    """A comma-separated word list written as prose, one item per comma."""
    return [item.strip() for item in text.split(",") if item.strip()]


_LANGUAGES = _items(
    """
    Python, Go, Rust, TypeScript, Java, Kotlin, C#, Elixir, Ruby, Scala, Swift, C++,
    Haskell, Dart, PHP, Clojure, OCaml, Lua
    """
)
_TOOLS = _items(
    """
    PostgreSQL, Redis, Kafka, RabbitMQ, gRPC, GraphQL, Docker, Kubernetes, Terraform,
    Ansible, Prometheus, Grafana, Elasticsearch, MongoDB, SQLite, React, Vue, Svelte,
    Django, FastAPI, Flask, Spring Boot, Rails, Phoenix, Tokio, Actix, NumPy, PyTorch,
    TensorFlow, Pandas, Airflow, dbt, Snowflake, DuckDB, Celery, Nginx, Envoy, NATS, MQTT,
    WebSockets, OpenTelemetry, Jaeger, Vault, Consul, Helm, Argo CD, GitHub Actions,
    pytest, Jest, Playwright, Cypress, Vitest, JUnit, Testcontainers, OpenAPI, Protobuf,
    Avro, Parquet, Arrow, ClickHouse, Cassandra
    """
)
_DOMAINS = [
    ("payments", "processes card payments and refunds for small shops"),
    ("logistics", "plans delivery routes and tracks parcels"),
    ("healthcare", "books appointments and reminds patients"),
    ("education", "grades programming exercises automatically"),
    ("gaming", "runs matchmaking and leaderboards for an online game"),
    ("energy", "forecasts solar output for rooftop installations"),
    ("retail", "recommends products from purchase history"),
    ("security", "scans container images for known vulnerabilities"),
    ("observability", "collects traces and metrics from microservices"),
    ("finance", "reconciles bank statements against invoices"),
    ("travel", "compares train and bus connections across Europe"),
    ("agriculture", "monitors soil moisture with wireless sensors"),
    ("media", "transcodes and streams user-uploaded videos"),
    ("science", "analyses telescope images for transient events"),
    ("community", "organises volunteers for neighbourhood events"),
]
_SKILL_VERBS = _items(
    """
    Designing, Testing, Scaling, Profiling, Securing, Deploying, Monitoring, Documenting,
    Refactoring, Migrating
    """
)
_SKILL_OBJECTS = _items(
    """
    REST APIs, event-driven services, database schemas, caching layers, CI pipelines,
    batch jobs, real-time dashboards, search indexes, authentication flows, background
    workers, data models, streaming pipelines, mobile clients, infrastructure as code
    """
)
_ADJECTIVES = _items(
    """
    swift, quiet, amber, lunar, brisk, cobalt, silver, tidy, bold, clever, rapid, gentle,
    iron, misty, north, solar, velvet
    """
)
_NOUNS = _items(
    """
    ledger, relay, harbor, beacon, atlas, forge, signal, garden, engine, compass, lantern,
    bridge, orbit, pulse, vault, canvas, quarry
    """
)


def synthetic_bundle(size: int, seed: int = 0, user: str = "bench") -> Bundle:
    """A bundle of `size` repositories with demo-like content, same for a seed."""
    rng = random.Random(seed)
    repositories: list[RepositoryResult] = []
    for i in range(size):
        name = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}-{i}"
        domain, purpose = rng.choice(_DOMAINS)
        language = rng.choice(_LANGUAGES)
        tech = [language, *rng.sample(_TOOLS, rng.randint(7, 11))]
        skills = [
            f"{rng.choice(_SKILL_VERBS)} {rng.choice(_SKILL_OBJECTS)}"
            for _ in range(rng.randint(6, 10))
        ]
        description = f"A {language} service that {purpose}, built with {tech[1]} and {tech[2]}."
        sections = [
            (
                "Overview",
                f"{name} {purpose}. It started as a weekend project for a {domain} "
                f"team and now runs in production. The core is written in {language}.",
            ),
            ("Features", " ".join(f"{s} with {rng.choice(tech)}." for s in skills[:4])),
            (
                "Architecture",
                f"Requests enter through {tech[3]} and are handled by workers "
                f"that use {tech[4]}; state lives in {tech[5]}. Every component is stateless "
                "except the store, so replicas scale horizontally.",
            ),
            (
                "Testing",
                f"Unit tests run with {rng.choice(_TOOLS)}; integration tests start "
                f"{tech[2]} in a container. A nightly job replays production traffic.",
            ),
            (
                "Lessons",
                f"Measuring before optimising saved weeks. {skills[-1]} was the "
                f"hardest part, and {tech[-1]} needed careful tuning under load.",
            ),
        ]
        readme = f"# {name}\n\n{description}\n\n" + "".join(
            f"## {heading}\n\n{text}\n\n" for heading, text in sections
        )
        repositories.append(
            repo(
                name,
                owner=user,
                description=description,
                tech=tech,
                skills=skills,
                topics=[domain, language.lower()],
                components=[
                    ("api", f"The public API of {name}, in {language}."),
                    ("worker", f"Background jobs that {purpose}."),
                ],
                faq=[(f"Why {tech[1]}?", f"It was the simplest way to make {name} {purpose}.")],
                readme=readme,
                scope=domain,
                fingerprint=f"sha256:{seed}-{i}",
                metadata={"description": description, "language": language, "topics": [domain]},
            )
        )
    return bundle(user, repositories)


def child(size: int, seed: int, device: str) -> dict[str, Any]:
    """One training run in this process; returns its figures."""
    from meshkit.config import Settings
    from meshkit.domain.embedding import base_model_path, prepare_offline

    prepare_offline()
    from trainsvc.finetune import TrainConfig, warm_up
    from trainsvc.pipeline import train_on_bundle

    warm_up()  # imports are a per-process cost, not a per-training one
    settings = Settings.from_env().train
    bundle = synthetic_bundle(size, seed)
    marks: list[float] = []

    def progress(step: int, total: int) -> None:
        if step == 0 or step == total:
            marks.append(time.monotonic())

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as workdir:
        result = train_on_bundle(
            bundle,
            TrainConfig.from_settings(settings),
            base_model=base_model_path(settings.model_path),
            device_setting=device,
            workdir=Path(workdir),
            on_progress=progress,
            should_stop=lambda: False,
        )
    total = time.monotonic() - started
    return {
        "repositories": size,
        "seconds": total,
        "train_seconds": marks[-1] - marks[0] if len(marks) >= 2 else 0.0,
        "steps": result.steps,
        "pairs": result.pairs,
        "passages": len(result.passages),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "base_mrr": result.base.mrr_at_10,
        "tuned_mrr": result.tuned.mrr_at_10,
        "device": result.device,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,50,200")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.seed, args.device)))
        return 0

    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        runs = []
        for run in range(args.runs):
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    str(size),
                    "--seed",
                    "0",
                    "--device",
                    args.device,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{size} repositories, run {run + 1}: {runs[-1]}", file=sys.stderr)
        rows.append(
            {
                key: (
                    statistics.median(r[key] for r in runs)
                    if isinstance(runs[0][key], float | int)
                    else runs[0][key]
                )
                for key in runs[0]
            }
        )
    print(
        "| repositories | passages | pairs | steps | pipeline (s) | fine-tuning (s) "
        "| peak RSS (MB) | MRR@10 base → tuned |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['repositories']} | {r['passages']:.0f} | {r['pairs']:.0f} | {r['steps']:.0f} "
            f"| {r['seconds']:.1f} | {r['train_seconds']:.1f} | {r['peak_rss_mb']:.0f} "
            f"| {r['base_mrr']:.3f} → {r['tuned_mrr']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
