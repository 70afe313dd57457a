"""Shared test set-up: 8 forced CPU devices, set before jax is imported.

Sharding tests need several devices; on a CPU-only machine XLA can split the
host into N virtual devices. The flag only takes effect if it is set before
the first `import jax`, which is why it lives here, at the top of conftest.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
