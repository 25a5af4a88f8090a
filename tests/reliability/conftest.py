"""Fixtures of the reliability tests: real artifacts (the shared ``mnist_convert``), their Keras variants,
and child workers that load hostile files so a native crash fails a test instead of killing pytest."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from hostile import Worker, make_keras_variants  # noqa: E402


@pytest.fixture(scope="session")
def artifacts(mnist_convert) -> dict[str, Path]:
    """name -> path of every converted artifact (read-only), plus "manifest"."""
    paths = {entry.name: mnist_convert.artifact_path(entry.name) for entry in mnist_convert.manifest.artifacts}
    paths["manifest"] = mnist_convert.manifest_path
    return paths


@pytest.fixture(scope="session")
def keras_variants(mnist_keras_path) -> dict[str, Path]:
    """The trained default as .keras, legacy .h5 and SavedModel (made once, cached beside it)."""
    from edgecnn.converters.zoo import cache_dir
    from edgecnn.fileio import sha256_of

    return make_keras_variants(mnist_keras_path, cache_dir() / "reliability-models" / sha256_of(mnist_keras_path)[:12])


@pytest.fixture(scope="module")
def runner_worker():
    with Worker(timeout_s=120) as worker:
        worker.start()
        yield worker


@pytest.fixture(scope="module")
def keras_worker():
    with Worker(keras=True, timeout_s=180) as worker:
        worker.start()
        yield worker
