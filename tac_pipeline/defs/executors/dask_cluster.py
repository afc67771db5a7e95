"""The Dask executor for cluster deployments (``TAC_EXECUTOR=dask``; see :mod:`tac_pipeline.config`).

It is dagster-dask's :class:`dagster_dask.DaskExecutor`, with its configuration (every cluster type it
knows: ``existing``, ``local``, ``yarn``, ``ssh``, ``pbs``, ``moab``, ``sge``, ``lsf``, ``slurm``, ``oar``,
``kube``), its worker function (``query_on_dask_worker``: ``execute_plan`` for one step in the worker's
long-lived process) and its resource-requirements tag: a step tagged ``dagster-dask/resource_requirements``
(the GPU steps, when ``TAC_DASK_GPU_RESOURCE=1``: :func:`tac_pipeline.defs.resources.compute.gpu_step_tags`) runs
only on workers that advertise those resources. Only the submission loop is this module's, for three fixes
upstream lacks:

- **Task keys carry the run id.** Upstream names a task ``<job>.<step>``, and Dask treats equal keys as the
  same task, so two runs of ``cluster_dataset`` for two datasets at once would share results.
- **Fan-in inputs.** Upstream fixes the plan's known state before any step ran, so a step that collects
  several upstream outputs (the shard concatenation) finds none of them ready and receives ``[]``; each task
  here adds the outputs its upstream tasks reported.
- **Current Dask.** Dask walks task arguments looking for futures, and Dagster's records refuse to be
  iterated: the Dagster objects travel inside the task's callable, and its result is one opaque object.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

from dagster import Field, executor, multiple_process_executor_requirements
from dagster_dask import dask_executor
from dagster_dask.executor import DaskExecutor, get_dask_resource_requirements, query_on_dask_worker

#: Upstream's cluster types and the cluster manager each starts (``existing`` connects to an address).
CLUSTER_MANAGERS = {
    "local": "dask.distributed:LocalCluster",
    "ssh": "dask.distributed:SSHCluster",
    "yarn": "dask_yarn:YarnCluster",
    "pbs": "dask_jobqueue:PBSCluster",
    "moab": "dask_jobqueue:MoabCluster",
    "sge": "dask_jobqueue:SGECluster",
    "lsf": "dask_jobqueue:LSFCluster",
    "slurm": "dask_jobqueue:SLURMCluster",
    "oar": "dask_jobqueue:OARCluster",
    "kube": "dask_kubernetes:KubeCluster",
}
_PACKAGES = {"dask_yarn": "dask-yarn", "dask_jobqueue": "dask-jobqueue", "dask_kubernetes": "dask-kubernetes"}


class _StepTask:
    """One step, run on a worker by upstream's ``query_on_dask_worker``, with its upstream outputs ready."""

    def __init__(self, recon_job, dagster_run, run_config, step_key, instance_ref, known_state):
        self.args = (recon_job, dagster_run, run_config, [step_key], instance_ref)
        self.known_state = known_state

    def __call__(self, dependencies) -> _StepEvents:
        known_state = with_ready_outputs(self.known_state, [d.events for d in dependencies])
        return _StepEvents(query_on_dask_worker(dependencies, *self.args, known_state))


class _StepEvents:
    """A step's events as one opaque task result (Dask's size estimate cannot walk Dagster's records)."""

    __slots__ = ("events",)

    def __init__(self, events):
        self.events = list(events)

    def __sizeof__(self) -> int:
        return 1024 * (1 + len(self.events))


def with_ready_outputs(known_state, upstream_events):
    """``known_state`` plus the outputs the upstream steps yielded (their events are this task's inputs)."""
    from tac_pipeline.dagster_internals import KnownExecutionState, StepOutputHandle

    ready = {
        StepOutputHandle(
            event.step_key, event.step_output_data.output_name, event.step_output_data.mapping_key
        )
        for events in upstream_events
        for event in events
        if event.is_successful_output
    }
    if not ready:
        return known_state
    known_state = known_state or KnownExecutionState()
    return known_state._replace(ready_outputs={*(known_state.ready_outputs or ()), *ready})


def cluster_manager(cluster_type: str):
    """The cluster-manager class of one of upstream's cluster types, or an error naming what to install."""
    if cluster_type not in CLUSTER_MANAGERS:
        raise ValueError(
            f"unknown Dask cluster type {cluster_type!r}: use existing or one of {', '.join(CLUSTER_MANAGERS)}"
        )
    module, name = CLUSTER_MANAGERS[cluster_type].split(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        package = _PACKAGES.get(module, module)
        raise ImportError(
            f"the Dask cluster type {cluster_type!r} needs {package}: pip install {package}"
        ) from exc


class TacDaskExecutor(DaskExecutor):
    """Upstream's executor with run-scoped task keys and fan-in inputs (see the module docstring)."""

    def _cluster(self, job_name: str):
        if self.cluster_type == "existing":
            return self.cluster_configuration["address"]
        return cluster_manager(self.cluster_type)(**self.build_dict(job_name))

    def execute(self, plan_context, execution_plan) -> Iterator:
        import dask.distributed

        from tac_pipeline.dagster_internals import iterate_with_context, raise_execution_interrupts

        if not plan_context.instance.is_persistent:
            raise RuntimeError(
                "the Dask executor needs a persistent Dagster instance that every worker can reach: set "
                "DAGSTER_HOME (with PostgreSQL storage when the workers run on other machines)"
            )
        run_id = plan_context.dagster_run.run_id
        cluster = self._cluster(plan_context.job_name)
        try:
            with dask.distributed.Client(cluster) as client:
                futures, by_step = [], {}
                for level in execution_plan.get_steps_to_execute_by_level():
                    for step in level:
                        # Passing the upstream futures makes Dask start a step only after its inputs exist.
                        dependencies = [
                            by_step[key]
                            for step_input in step.step_inputs
                            for key in step_input.dependency_keys
                        ]
                        task = _StepTask(
                            plan_context.reconstructable_job,
                            plan_context.dagster_run,
                            plan_context.run_config,
                            step.key,
                            plan_context.instance.get_ref(),
                            execution_plan.known_state,
                        )
                        future = client.submit(
                            task,
                            dependencies,
                            key=f"{plan_context.job_name}.{run_id}.{step.key}",
                            resources=get_dask_resource_requirements(step.tags) or None,
                            pure=False,
                        )
                        futures.append(future)
                        by_step[step.key] = future
                completed = dask.distributed.as_completed(futures, with_results=True)
                for _future, result in iterate_with_context(raise_execution_interrupts, completed):
                    yield from result.events
        finally:
            if not isinstance(cluster, str):
                cluster.close()


@executor(
    name="tac_dask_executor",
    requirements=multiple_process_executor_requirements(),
    config_schema=dask_executor.config_schema,
)
def tac_dask_executor(init_context):
    """Steps as tasks on a Dask cluster, configured as dagster-dask's ``dask`` executor is."""
    ((cluster_type, cluster_configuration),) = init_context.executor_config["cluster"].items()
    return TacDaskExecutor(cluster_type, cluster_configuration)


def dask_executor_for(deployment):
    """``tac_dask_executor`` whose default cluster comes from a :class:`~tac_pipeline.config.Deployment`
    (its scheduler address, or a ``LocalCluster`` of ``dask_workers`` processes); a run's config
    ``execution: {config: {cluster: {<type>: {...}}}}`` may pick any other of upstream's cluster types."""
    from tac_pipeline.config import DeploymentError, deployment_from_env

    if deployment.dask_gpu_resource and not deployment_from_env().dask_gpu_resource:
        raise DeploymentError(
            "TAC_DASK_GPU_RESOURCE=1 must be set in the environment (of the code location, the daemon and every "
            "worker): the GPU steps' Dask resource tag is read when the assets are imported"
        )
    if deployment.dask_scheduler:
        default = {"existing": {"address": deployment.dask_scheduler}}
    else:
        default = {"local": {"n_workers": deployment.dask_workers}}
    cluster_type = dask_executor.config_schema.as_field().config_type.fields["cluster"].config_type

    def config_fn(config: dict) -> dict:
        return {"cluster": config.get("cluster") or default}

    return tac_dask_executor.configured(
        config_fn,
        name="tac_dask_executor",
        config_schema={
            "cluster": Field(
                cluster_type,
                is_required=False,
                description=f"The Dask cluster (default {next(iter(default))}: {deployment.dask_scheduler or 'local'})."
                " One of existing, "
                + ", ".join(CLUSTER_MANAGERS)
                + ", with its manager's keyword arguments.",
            )
        },
    )
