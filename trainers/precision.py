"""``mixed_precision="auto"``: the compute dtype this machine runs fastest without hurting the likelihood.

  GPUs of compute capability >= 8.0 (Ampere and newer)    bfloat16
  GPUs of compute capability 7.x (Volta, Turing)          float16 (with loss scaling)
  no GPU, a CPU with AVX512_BF16 or AMX (oneDNN kernels)  bfloat16
  anything else                                           none (float32)

Weights, likelihoods, losses and the heads' normalisation stay float32 under
every policy (Keras mixed precision keeps float32 variables; the heads cast
their parameters to float32). For library users who call ``fit`` themselves,
before building the model:

    keras.mixed_precision.set_dtype_policy(policy_name(resolve_mixed_precision("auto")))
"""

import functools

PRECISIONS = ("auto", "none", "bfloat16", "float16")


def gpu_compute_capabilities():
    """[(major, minor)] of the visible GPUs ([] without any)."""
    import tensorflow as tf

    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability:
            capabilities.append(tuple(capability))
    return capabilities


@functools.lru_cache(maxsize=1)
def cpu_flags():
    """The CPU's feature flags (from /proc/cpuinfo; empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def resolve_mixed_precision(requested):
    """What ``requested`` ("auto", "none", "bfloat16" or "float16") means on this machine: none, bfloat16 or float16."""
    if requested not in PRECISIONS:
        raise ValueError(f"mixed_precision: expected one of {list(PRECISIONS)}, got {requested!r}.")
    if requested != "auto":
        return requested
    capabilities = gpu_compute_capabilities()
    if capabilities:
        oldest = min(capabilities)
        if oldest >= (8, 0):
            return "bfloat16"
        return "float16" if oldest >= (7, 0) else "none"
    return "bfloat16" if cpu_flags() & {"avx512_bf16", "amx_bf16"} else "none"


def policy_name(resolved):
    """The Keras dtype policy of a resolved precision: float32, mixed_bfloat16 or mixed_float16."""
    return "float32" if resolved == "none" else f"mixed_{resolved}"
