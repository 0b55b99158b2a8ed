"""Test support that ships with sdnet, so that the tests and the benchmark scripts share it.

* :mod:`sdnet.testing.simdevice`: a simulated CUDA device (an array namespace over NumPy that
  behaves like CuPy through ``array-api-compat`` where it matters) recording the kernel
  launches, host syncs, host-to-device copies, wrong-device work and float64 work that a real
  GPU would pay for.
* :mod:`sdnet.testing.steps`: whole training steps of :func:`sdnet.train` measured one by one
  on that device.
"""
