"""CPU arithmetic that does not depend on the thread count.

On some CPUs (seen on an Intel Xeon with AVX-512; not on the AMD EPYC where the project began)
MKL's fp32 GEMM splits the reduction of a small, deep product (e.g. a 3×3 convolution with 128
input channels on a 4×4 latent: K = 1152) across threads, so 1 and 2 threads give outputs that
differ in the last bits. oneDNN's convolutions reach the same GEMM. MKL's Conditional Numerical
Reproducibility in *strict* mode fixes the order of those sums whatever the thread count.

Strict mode can only be switched on before MKL's first computation in the process, so importing
``fiffdepth`` does it (``fiffdepth/__init__.py``), with the best code path for the CPU (AUTO).
It is left alone where the user chose a mode (the ``MKL_CBWR`` environment variable) or opted out
(``FIFFDEPTH_MKL_STRICT=0``), and is a no-op on torch builds without MKL.
"""

from __future__ import annotations

import ctypes
import os

MKL_CBWR_AUTO = 2
MKL_CBWR_STRICT = 0x10000
_SETTERS = ("mkl_cbwr_set", "mkl_serv_cbwr_set")  # the public name, and the one torch's static MKL exports

_status = "not tried"


def strict_mkl() -> str:
    """Switch MKL to AUTO + STRICT conditional numerical reproducibility, once per process.

    Returns what happened: "on", "user MKL_CBWR=…", "opted out", "no MKL", or "too late (MKL
    already in use)" when something computed with MKL before fiffdepth was imported.
    """
    global _status
    if _status != "not tried":
        return _status
    if os.environ.get("MKL_CBWR"):
        _status = f"user MKL_CBWR={os.environ['MKL_CBWR']}"
    elif os.environ.get("FIFFDEPTH_MKL_STRICT", "1") == "0":
        _status = "opted out"
    else:
        _status = _set_strict()
    return _status


def _set_strict() -> str:
    import torch

    if not torch.backends.mkl.is_available():
        return "no MKL"
    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
    except OSError:  # another platform's library name: leave MKL as it is
        return "no MKL"
    for name in _SETTERS:
        fn = getattr(lib, name, None)
        if fn is not None:
            rc = fn(ctypes.c_int(MKL_CBWR_AUTO | MKL_CBWR_STRICT))
            return "on" if rc == 0 else "too late (MKL already in use)"
    return "no MKL"
