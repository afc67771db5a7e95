"""A Dask executor for cluster deployments (selected by ``TAC_EXECUTOR=dask``; see :mod:`tac_pipeline.deployment`).

It builds on ``dagster-dask``: every step is a Dask task that runs ``execute_plan`` for that one step on a
worker, in the worker's long-lived process (so no per-step Python start-up). Two differences from
``dagster_dask.dask_executor``:

- Task keys carry the run id. dagster-dask names a task ``<job>.<step>``, and Dask treats equal keys as the
  same task, so two runs of ``cluster_dataset`` for two datasets at once would share results.
- Steps tagged ``tac/gpu`` can ask for a Dask ``GPU`` resource (``gpu_resource``): they then run only on
  workers started with ``--resources GPU=1``, one at a time per such worker.

Cluster managers (dask-kubernetes, dask-jobqueue, dask-cloudprovider, ``dask scheduler`` / ``dask worker``)
all end in a scheduler address; this executor connects to it (``existing``), or starts a ``LocalCluster``
for the run (``local``).
"""

from __future__ import annotations

from collections.abc import Iterator

from dagster import (
    Executor,
    Field,
    Permissive,
    Selector,
    StringSource,
    executor,
    multiple_process_executor_requirements,
)

from tac_pipeline.resources.compute import GPU_TAG


class _StepTask:
    """One step, run on a worker by dagster-dask's ``query_on_dask_worker``.

    The Dagster objects travel inside this callable rather than as task arguments: Dask walks task
    arguments looking for futures, and Dagster's records refuse to be iterated.
    """

    def __init__(self, recon_job, dagster_run, run_config, step_key, instance_ref, known_state):
        self.args = (recon_job, dagster_run, run_config, [step_key], instance_ref)
        self.known_state = known_state

    def __call__(self, dependencies) -> _StepEvents:
        from dagster_dask.executor import query_on_dask_worker

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
    """``known_state`` plus the outputs the upstream steps yielded (their events are this task's inputs).

    The plan's state is fixed when the tasks are submitted, before any step ran; without this, a step that
    fans in several upstream outputs (the shard concatenation) would find none of them ready and get [].
    """
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


class TacDaskExecutor(Executor):
    def __init__(self, cluster_type: str, cluster_configuration: dict, gpu_resource: bool):
        self.cluster_type = cluster_type
        self.cluster_configuration = dict(cluster_configuration or {})
        self.gpu_resource = gpu_resource

    @property
    def retries(self):
        from tac_pipeline.dagster_internals import RetryMode

        return RetryMode.DISABLED

    def step_resources(self, tags) -> dict[str, float]:
        from dagster_dask.executor import get_dask_resource_requirements

        resources = dict(get_dask_resource_requirements(tags))
        if self.gpu_resource and tags.get(GPU_TAG) == "true":
            resources.setdefault("GPU", 1)
        return resources

    def _cluster(self):
        if self.cluster_type == "existing":
            return self.cluster_configuration["address"]
        from dask.distributed import LocalCluster

        # One thread per worker: Dagster's step execution is not thread-safe.
        return LocalCluster(**{"threads_per_worker": 1, **self.cluster_configuration})

    def execute(self, plan_context, execution_plan) -> Iterator:
        import dask.distributed

        from tac_pipeline.dagster_internals import iterate_with_context, raise_execution_interrupts

        if not plan_context.instance.is_persistent:
            raise RuntimeError(
                "the Dask executor needs a persistent Dagster instance that every worker can reach: set "
                "DAGSTER_HOME (with PostgreSQL storage when the workers run on other machines)"
            )
        run_id = plan_context.dagster_run.run_id
        cluster = self._cluster()
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
                            resources=self.step_resources(step.tags) or None,
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
    config_schema={
        "cluster": Field(
            Selector(
                {
                    "existing": Field(
                        {"address": StringSource}, description="Connect to a running Dask scheduler."
                    ),
                    "local": Field(
                        Permissive(),
                        is_required=False,
                        description="Start a distributed.LocalCluster for the run (its keyword arguments).",
                    ),
                }
            ),
            default_value={"local": {}},
        ),
        "gpu_resource": Field(
            bool,
            default_value=False,
            description="Steps tagged tac/gpu ask for one Dask 'GPU' resource (workers: --resources GPU=1).",
        ),
    },
)
def tac_dask_executor(init_context):
    """Steps as tasks on a Dask cluster; see :mod:`tac_pipeline.executors`."""
    config = init_context.executor_config
    ((cluster_type, cluster_configuration),) = config["cluster"].items()
    return TacDaskExecutor(cluster_type, cluster_configuration, config["gpu_resource"])


def dask_executor_for(deployment):
    """``tac_dask_executor`` configured from a :class:`~tac_pipeline.deployment.Deployment`."""
    if deployment.dask_scheduler:
        cluster = {"existing": {"address": deployment.dask_scheduler}}
    else:
        cluster = {"local": {"n_workers": deployment.dask_workers}}
    return tac_dask_executor.configured(
        {"cluster": cluster, "gpu_resource": deployment.dask_gpu_resource}, name="tac_dask_executor"
    )
