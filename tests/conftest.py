import os

# Triton reads this when kernels are defined: on a machine without CUDA the kernels run in its interpreter.
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")
