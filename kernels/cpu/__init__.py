"""CPU kernels in C, for the ops where torch's CPU path is far from the memory-bandwidth bound.

Built once per machine with the system C compiler (-march=native, OpenMP) into the user cache and loaded with
ctypes; the calls release the GIL. OpenMP comes from the libgomp torch has already loaded, so these kernels
share torch's thread pool. Where no compiler is found, `available()` is False and callers use the torch
references.
"""

from kernels.cpu.build import available, load

__all__ = ["available", "load"]
