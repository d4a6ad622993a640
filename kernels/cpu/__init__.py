"""CPU kernels in C, for the ops where torch's CPU path is far from the memory-bandwidth bound.

Each kernel is a .c file beside a ctypes wrapper with a `supports(tensor)` check. build.py compiles a kernel
once per machine with the system C compiler (-march=native, OpenMP) into the user cache; the calls release the
GIL, and OpenMP binds to the libgomp torch has already loaded, so the kernels share torch's thread pool. Where
no compiler is found, `supports` is False and callers use the torch references.
"""
