"""rlvr: reinforcement learning with verifiable rewards on Ray.

Importing this package is cheap on purpose: it must not import vllm, ray or
deepspeed. Heavy modules are imported inside the functions that need them.
"""

__version__ = "0.1.0"
