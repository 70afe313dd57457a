"""Devices, mesh and shardings: data parallelism with jit, not pmap.

    maybe_initialize_distributed()          # multi-host: no-op on one host
    mesh = make_mesh()                      # 1-D mesh, axis "data"
    batch = global_batch(local_batch, mesh) # per-process numpy -> global jax.Array

`jax.jit` with `NamedSharding`s is the current replacement for `jax.pmap`
(which is in maintenance mode): one program is written for the global batch,
XLA's partitioner splits it over the mesh and inserts the gradient all-reduce.
The batch is split along its example axis over "data"; run states (params,
optimizer state) are replicated. The same code runs on 1 CPU, on 8 forced
CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8), and on
GPU/TPU.
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"

# Environment variables that signal a multi-process launch that
# jax.distributed.initialize() can auto-detect (SLURM, Open MPI, TPU pods), or
# an explicit coordinator.
_DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS",
                    "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES")


def maybe_initialize_distributed() -> bool:
  """Calls jax.distributed.initialize() when a multi-process launch is detected.

  Returns:
    True if this process joined a multi-process job.
  """
  if not any(v in os.environ for v in _DISTRIBUTED_ENV):
    return False
  if os.environ.get("SLURM_NTASKS") == "1":
    return False
  if jax.distributed.is_initialized():
    return True
  kwargs = {}
  if "JAX_COORDINATOR_ADDRESS" in os.environ:
    kwargs = dict(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]))
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed: process %d of %d", jax.process_index(),
               jax.process_count())
  return True


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh over all (or the first `num_devices`) devices, axis "data"."""
  devices = jax.devices()
  if num_devices is not None:
    if not 1 <= num_devices <= len(devices):
      raise ValueError(f"num_devices={num_devices} but {len(devices)} devices "
                       "are available")
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, example_axis: int = 1) -> NamedSharding:
  """Sharding for a batch leaf whose `example_axis` is split over "data".

  Train batches are [S, B, ...] (S seed streams, B examples), so the default
  example axis is 1.
  """
  spec = [None] * example_axis + [DATA_AXIS]
  return NamedSharding(mesh, P(*spec))


def global_batch(local: dict[str, np.ndarray], mesh: Mesh,
                 example_axis: int = 1) -> dict[str, jax.Array]:
  """Assembles per-process batches into global arrays sharded over "data".

  On one process this is a sharded device_put. On several, each process
  passes its own slice of the global batch (contiguous along `example_axis`,
  in process order) and the result is one global jax.Array.
  """
  sharding = batch_sharding(mesh, example_axis)
  if jax.process_count() == 1:
    return jax.device_put(local, sharding)

  def put(x):
    shape = list(x.shape)
    shape[example_axis] *= jax.process_count()
    return jax.make_array_from_process_local_data(sharding, x, tuple(shape))
  return {k: put(v) for k, v in local.items()}
