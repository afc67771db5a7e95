"""The Dask executor is dagster-dask's, with its cluster types and resource tag; only the submission is ours.

Skipped when the ``distributed`` extra is missing, unless ``TAC_REQUIRE_DASK`` is set (CI sets it).
"""

from __future__ import annotations

import os

import pytest

if os.environ.get("TAC_REQUIRE_DASK"):
    import dagster_dask  # noqa: F401
else:
    pytest.importorskip("distributed")
    pytest.importorskip("dagster_dask")

from dagster_dask import dask_executor
from dagster_dask.executor import DASK_RESOURCE_REQUIREMENTS_KEY, DaskExecutor, get_dask_resource_requirements

from tac_pipeline.config import Deployment, DeploymentError
from tac_pipeline.defs.executors.dask_cluster import (
    CLUSTER_MANAGERS,
    TacDaskExecutor,
    cluster_manager,
    dask_executor_for,
)
from tac_pipeline.defs.resources.compute import DASK_RESOURCE_REQUIREMENTS_TAG, GPU_TAG, gpu_step_tags


def _cluster_types(executor_def) -> set[str]:
    return set(executor_def.config_schema.as_field().config_type.fields["cluster"].config_type.fields)


def test_every_upstream_cluster_type_is_reachable():
    upstream = _cluster_types(dask_executor)
    assert upstream == {"existing", *CLUSTER_MANAGERS}  # a cluster type upstream adds fails here by name
    ours = dask_executor_for(Deployment(executor="dask"))
    assert _cluster_types(ours) == upstream
    from dask.distributed import LocalCluster, SSHCluster

    assert cluster_manager("local") is LocalCluster and cluster_manager("ssh") is SSHCluster
    for kind in ("slurm", "pbs", "kube", "yarn"):
        try:
            manager = cluster_manager(kind)
        except ImportError as exc:  # not installed here: the message says what to install
            assert "pip install dask-" in str(exc), exc
        else:
            assert manager.__name__.endswith("Cluster")
    with pytest.raises(ValueError, match="existing or one of local"):
        cluster_manager("mesos")


def test_the_deployment_sets_the_default_cluster_and_run_config_may_pick_another():
    def resolved(executor_def, config):
        result = executor_def.config_schema.resolve_config({"config": config})
        assert result.success, result.errors
        return result.value["config"]

    address = dask_executor_for(Deployment(executor="dask", dask_scheduler="tcp://h:8786"))
    assert address.config_schema.resolve_config({"config": {}}).success
    local = dask_executor_for(Deployment(executor="dask", dask_workers=3))
    slurm = resolved(local, {"cluster": {"slurm": {"cores": 4, "memory": "16GB"}}})
    assert slurm == {"cluster": {"slurm": {"cores": 4, "memory": "16GB"}}}
    assert not local.config_schema.resolve_config({"config": {"cluster": {"mesos": {}}}}).success
    assert issubclass(TacDaskExecutor, DaskExecutor)


def test_gpu_steps_carry_upstreams_resource_requirements_tag():
    assert DASK_RESOURCE_REQUIREMENTS_TAG == DASK_RESOURCE_REQUIREMENTS_KEY
    plain = gpu_step_tags({})
    assert plain == {GPU_TAG: "true"} and get_dask_resource_requirements(plain) == {}
    routed = gpu_step_tags({"TAC_DASK_GPU_RESOURCE": "1"})
    assert routed[GPU_TAG] == "true" and get_dask_resource_requirements(routed) == {"GPU": 1}


def test_a_gpu_resource_deployment_needs_the_environment_the_tags_are_read_from(monkeypatch):
    monkeypatch.delenv("TAC_DASK_GPU_RESOURCE", raising=False)
    with pytest.raises(DeploymentError, match="TAC_DASK_GPU_RESOURCE=1 must be set in the environment"):
        dask_executor_for(Deployment(executor="dask", dask_gpu_resource=True))
    monkeypatch.setenv("TAC_DASK_GPU_RESOURCE", "1")
    assert dask_executor_for(Deployment(executor="dask", dask_gpu_resource=True)).name == "tac_dask_executor"
