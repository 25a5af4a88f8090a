"""The Ray cluster the tests in this folder share: head + one worker, 1 CPU each, on loopback in a network
namespace of its own (see raycluster.py). Skipped, with the reason, where Ray is not installed (the
``cluster`` extra; `bash dev.sh test` installs it) or network namespaces cannot be made (not root)."""
from __future__ import annotations

import pytest

from raycluster import RayTestCluster, cluster_or_skip


@pytest.fixture(scope="module")
def ray_cluster():
    """A running 2-node cluster (head + worker, 1 CPU each); stopped by PID when the module's tests are done."""
    cluster_or_skip()
    cluster = RayTestCluster("ray")
    try:
        cluster.start_head()
        cluster.add_node()
        cluster.nodes_info = cluster.wait_nodes(2)
        yield cluster
    finally:
        cluster.stop()
