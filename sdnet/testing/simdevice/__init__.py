"""A simulated CUDA device: CuPy through array-api-compat, over NumPy, with a meter.

CI has no GPU. This package lets it prove that sdnet's GPU path is clean and cheap: an array
namespace whose arrays live on simulated devices ``sim:0``, ``sim:1`` ... and whose operations
compute with NumPy (the results are NumPy's, bit for bit) while recording what a CUDA device
would pay for, the way CuPy through ``array-api-compat`` does it:

* **kernel launches**, one per operation producing or writing an array, none for views
  (:mod:`._array`, :mod:`._indexing`, :mod:`._namespace` say which operation costs what);
* **host syncs**: every value read back (``bool``, ``float``, ``int``, ``index``, ``item``,
  ``tolist``, ``__array__``, DLPack export, ``to_numpy``), boolean-mask indexing, functions
  with data-dependent output shapes, and ``clip`` (array-api-compat's ``clip`` for CuPy uses
  boolean masks: two syncs per bound);
* **host-to-device copies** with their sizes (``asarray`` of host data, CuPy's pointer tables);
* **wrong-device work**: CuPy runs kernels and allocates new arrays on the *current* device,
  and array-api-compat's creation functions ignore ``device=`` (only ``asarray`` honours it);
  a kernel reading an array of another device, a creation whose ``device=`` was ignored and an
  operation mixing devices are recorded;
* **float64 work**: every operation computing in float64.

Usage::

    from sdnet.testing import simdevice as sim

    sim.install()                            # get_backend("sim:1") now works
    model = sdnet.build_model("resnet8", in_channels=1, device="sim:1")
    with sim.record() as rec:
        ...                                  # train, evaluate
    rec.launches, rec.by_op, rec.syncs, rec.h2d, rec.wrong_device, rec.float64
    with sim.strict():                       # raise at the first wrong-device event instead
        ...
"""

from sdnet.testing.simdevice._array import SimArray
from sdnet.testing.simdevice._backend import DRIVER, PREFIX, SimDriver, backend, install
from sdnet.testing.simdevice._device import DEVICE_COUNT, SimDevice, current, device
from sdnet.testing.simdevice._namespace import SimNamespace, xp
from sdnet.testing.simdevice._record import (
    KINDS,
    Event,
    Recording,
    SimDeviceError,
    record,
    strict,
)

__all__ = [
    "DEVICE_COUNT",
    "DRIVER",
    "Event",
    "KINDS",
    "PREFIX",
    "Recording",
    "SimArray",
    "SimDevice",
    "SimDeviceError",
    "SimDriver",
    "SimNamespace",
    "backend",
    "current",
    "device",
    "install",
    "record",
    "strict",
    "xp",
]
