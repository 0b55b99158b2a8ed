"""2-D convolution (cross-correlation, NCHW, no bias) as matrix products over shifted views.

Forward (stride s, zero padding p, kernel kh x kw)::

    y[n, o, i, j] = sum_{c, a, b} w[o, c, a, b] * xpad[n, c, s*i + a, s*j + b]

Backward::

    dw[o, c, a, b] = sum_{n, i, j} dy[n, o, i, j] * xpad[n, c, s*i + a, s*j + b]
    dxpad[n, c, s*i + a, s*j + b] += sum_o w[o, c, a, b] * dy[n, o, i, j]

How it is computed (the cost is moving data, not arithmetic):

* The work is done channel-major: the input is viewed as (C, N, H, W) and the kh*kw shifted
  views of its padded copy are stacked into ``cols`` (C*kh*kw, N*Ho*Wo), rows in the weight's
  own (C, kh, kw) order, so that the weight is a free (O, C*kh*kw) view and the whole batch is
  ONE matrix product ``w2 @ cols``, whose result (O, N, Ho, Wo) is returned as an
  (N, O, Ho, Wo) view. Element-wise layers keep that memory order, so the next convolution's
  channel-major view costs nothing: the network runs channel-major while every shape stays NCHW.
* On the CPU, ``cols`` is built for a block of images at a time, sized to stay in cache
  (:data:`CHUNK_BYTES`), and the blocks of NumPy arrays run in parallel host threads
  (:mod:`sdnet._threads`); a GPU takes the whole batch at once.
* Each block pads its own images, so neither the padded input nor ``cols`` exists whole on
  the CPU. Only (a view of) the input is kept for the backward pass, not ``cols``, which is
  kh*kw times larger; the weight gradient rebuilds ``cols`` block by block. A device, which
  takes the whole batch as one block, keeps the padded input it made (two kernel launches
  fewer in the backward pass, for a little more memory).
* For stride 1 the input gradient is the forward correlation of the padded output gradient with
  the flipped, transposed kernel: the same matrix product, never materialising d(cols). Other
  strides compute d(cols) = w^T dy in one product and add each kernel offset's part into the
  strided view of a padded buffer it came from.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sdnet._array_api import device, namespace, on_host, on_input_device, strided, zeros_like_padded
from sdnet._threads import map_blocks
from sdnet.backends.kernels import lookup

__all__ = ["conv2d", "conv2d_backward", "conv_output_size"]

Array = Any

#: Bytes of ``cols`` built at once on a CPU: a block of images that stays in the cache.
CHUNK_BYTES = 4 << 20


class ConvSaved(NamedTuple):
    xt: Array  # (C, N, H, W) channel-major view of the input, or its padded copy (``padded``)
    w: Array  # (O, C, kh, kw)
    x_shape: tuple[int, int, int, int]
    stride: int
    padding: int
    padded: bool = False  # xt is already padded (a device, which takes the batch in one block)


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def _pad(x: Array, p: int) -> Array:
    """Zero-pad the last two axes of a 4-D array by ``p``."""
    if p == 0:
        return x
    h, w = x.shape[2], x.shape[3]
    out = zeros_like_padded(x, p)  # (A, B, H+2p, W+2p)
    out[:, :, p : p + h, p : p + w] = x
    return out


def _im2col(xpad: Array, kh: int, kw: int, ho: int, wo: int, s: int) -> Array:
    """(C, n, Hp, Wp) -> (C*kh*kw, n*Ho*Wo): row (c*kh + a)*kw + b holds offset (a, b).

    On the host the kh*kw shifted views are stacked (strided copies, fast in cache); on a
    device, where each copy is a kernel launch, one ``take`` gathers them all at once.
    """
    xp = namespace(xpad)
    c, n, hp, wp = xpad.shape
    if not on_host(xpad):
        idx = _gather_index(xpad, n, hp, wp, kh, kw, ho, wo, s)  # (kh*kw*n*Ho*Wo,)
        cols = xp.take(xp.reshape(xpad, (c, n * hp * wp)), idx, axis=1)  # (C, kh*kw*n*Ho*Wo)
        return xp.reshape(cols, (c * kh * kw, n * ho * wo))
    views = [
        xpad[:, :, strided(a, ho, s), strided(b, wo, s)] for a in range(kh) for b in range(kw)
    ]  # kh*kw arrays (C, n, Ho, Wo)
    return xp.reshape(xp.stack(views, axis=1), (c * kh * kw, n * ho * wo))


def _gather_index(
    like: Array, n: int, hp: int, wp: int, kh: int, kw: int, ho: int, wo: int, s: int
) -> Array:
    """Where column (a*kw + b, m, i, j) of ``cols`` reads in a flattened (n, Hp, Wp) image
    batch: ``m*Hp*Wp + (s*i + a)*Wp + s*j + b``, int64 on ``like``'s device. It depends on the
    shapes only, so it is made once per shape and device (a few launches) and kept."""
    key = (str(device(like)), n, hp, wp, kh, kw, ho, wo, s)
    if key not in _INDEX:
        xp, dev = namespace(like), device(like)
        ar = lambda k: xp.arange(k, dtype=xp.int64, device=dev)  # noqa: E731
        offset = xp.reshape(ar(kh)[:, None] * wp + ar(kw)[None, :], (kh * kw, 1, 1, 1))
        image = xp.reshape(ar(n) * (hp * wp), (1, n, 1, 1))
        rows = xp.reshape(ar(ho) * (s * wp), (1, 1, ho, 1))
        cols = xp.reshape(ar(wo) * s, (1, 1, 1, wo))
        if len(_INDEX) >= _INDEX_MAX:
            _INDEX.pop(next(iter(_INDEX)))
        _INDEX[key] = xp.reshape(offset + image + rows + cols, (-1,))
    return _INDEX[key]


# gather indices of the device path, by device and shapes (a handful in a network); bounded
_INDEX: dict[tuple[Any, ...], Array] = {}
_INDEX_MAX = 64


def _block(x: Array, bytes_per_image: int) -> int:
    """Images per block of ``cols``: all of them off the host, a cache-sized block on it, the
    blocks of even count and nearly equal size (host threads share them out evenly). The rule
    does not depend on the thread count, so neither do the results."""
    n = x.shape[1]
    if not on_host(x):
        return n
    blocks = -(-n // max(1, min(n, CHUNK_BYTES // max(1, bytes_per_image))))
    blocks += blocks % 2 if blocks > 1 else 0
    return -(-n // blocks)


def _correlate(xt: Array, w2: Array, kh: int, kw: int, ho: int, wo: int, s: int, p: int) -> Array:
    """``w2 (O, C*kh*kw) @ im2col(pad(xt, p))`` block by block -> (O, N, Ho, Wo).

    ``xt`` is (C, N, H, W); each block pads its own images, so the padded copy, like
    ``cols``, exists only a block at a time (in cache, in parallel threads).
    """
    xp = namespace(xt, w2)
    c, n = xt.shape[0], xt.shape[1]
    o = w2.shape[0]
    nb = _block(xt, kh * kw * c * ho * wo * _itemsize(xt))
    fast = lookup("correlate", xt)
    if fast is not None:  # the backend's own form (sdnet.backends.kernels)
        return fast(xt, w2, kh, kw, ho, wo, s, p, nb)
    if nb >= n:
        cols = _im2col(_pad(xt, p), kh, kw, ho, wo, s)  # (C*kh*kw, N*Ho*Wo)
        return xp.reshape(xp.matmul(w2, cols), (o, n, ho, wo))
    y = xp.empty((o, n, ho, wo), dtype=xt.dtype, device=device(xt))

    def block(n0: int) -> None:  # blocks write disjoint slices of y: safe in parallel threads
        n1 = min(n, n0 + nb)
        cols = _im2col(_pad(xt[:, n0:n1, :, :], p), kh, kw, ho, wo, s)  # (C*kh*kw, m*Ho*Wo)
        y[:, n0:n1, :, :] = xp.reshape(xp.matmul(w2, cols), (o, n1 - n0, ho, wo))

    map_blocks(block, range(0, n, nb), xt)
    return y


def _itemsize(x: Array) -> int:
    xp = namespace(x)
    return 8 if x.dtype == xp.float64 else 4


@on_input_device
def conv2d(x: Array, w: Array, *, stride: int = 1, padding: int = 0) -> tuple[Array, ConvSaved]:
    """Convolve ``x`` (N, C, H, W) with ``w`` (O, C, kh, kw).

    Returns
    -------
    y : array, shape (N, O, Ho, Wo)
        A view of a channel-major (O, N, Ho, Wo) buffer.
    saved : what :func:`conv2d_backward` needs.
    """
    xp = namespace(x, w)
    n, c, h, wd = x.shape
    o, c_w, kh, kw = w.shape
    if c != c_w:
        raise ValueError(f"conv2d: input has {c} channels but the weight expects {c_w}")
    ho = conv_output_size(h, kh, stride, padding)
    wo = conv_output_size(wd, kw, stride, padding)
    if ho <= 0 or wo <= 0:
        raise ValueError(f"conv2d: input {h}x{wd} too small for kernel {kh}x{kw}, pad {padding}")
    xt = xp.permute_dims(x, (1, 0, 2, 3))  # (C, N, H, W), free when x is channel-major
    w2 = xp.reshape(w, (o, c * kh * kw))  # rows ordered like cols: a free view
    if _block(xt, kh * kw * c * ho * wo * _itemsize(xt)) >= n:  # one block: keep the padding
        xt = _pad(xt, padding)  # (C, N, H + 2p, W + 2p)
        cols = _im2col(xt, kh, kw, ho, wo, stride)  # (C*kh*kw, N*Ho*Wo)
        y = xp.reshape(xp.matmul(w2, cols), (o, n, ho, wo))
        saved = ConvSaved(xt, w, (n, c, h, wd), stride, padding, padded=True)
    else:
        y = _correlate(xt, w2, kh, kw, ho, wo, stride, padding)  # (O, N, Ho, Wo)
        saved = ConvSaved(xt, w, (n, c, h, wd), stride, padding)
    return xp.permute_dims(y, (1, 0, 2, 3)), saved


@on_input_device
def conv2d_backward(
    dy: Array, saved: ConvSaved, *, need_dx: bool = True
) -> tuple[Array | None, Array]:
    """Gradients of :func:`conv2d`.

    Parameters
    ----------
    dy : array, shape (N, O, Ho, Wo)
    saved : ConvSaved
    need_dx : bool
        Skip the input gradient (e.g. for the first layer, whose input is data).

    Returns
    -------
    dx : array (N, C, H, W) or None
    dw : array (O, C, kh, kw)
    """
    xp = namespace(dy)
    xt, w, (n, c, h, wd), s, p, padded = saved
    o, _, kh, kw = w.shape
    ho, wo = dy.shape[2], dy.shape[3]
    dyt = xp.permute_dims(dy, (1, 0, 2, 3))  # (O, N, Ho, Wo), free when dy is channel-major
    fused = _backward_same(xt, dyt, w, s, p, padded) if need_dx else None
    if fused is not None:  # the backend's one pass for both gradients
        dxt, dw2 = fused
        return xp.permute_dims(dxt, (1, 0, 2, 3)), xp.reshape(dw2, (o, c, kh, kw))
    dw2 = _weight_grad(xt, dyt, kh, kw, s, 0 if padded else p)  # (O, C*kh*kw)
    dw = xp.reshape(dw2, (o, c, kh, kw))  # (O, C, kh, kw), a free view
    if not need_dx:
        return None, dw
    q = kh - 1 - p  # padding of dy that turns the transposed convolution into a correlation
    if s == 1 and kh == kw and 0 <= q:
        # dx = dy (padded by q) correlated with w flipped in space, in/out channels swapped
        wf = xp.permute_dims(xp.flip(w, axis=(2, 3)), (1, 0, 2, 3))  # (C, O, kh, kw)
        wf2 = xp.reshape(wf, (c, o * kh * kw))
        dxt = _correlate(dyt, wf2, kh, kw, h, wd, 1, q)  # (C, N, H, W)
    else:  # d(cols) = w^T dy in one product, then each offset's part added where it came from
        dy2 = xp.reshape(dyt, (o, n * ho * wo))  # (O, N*Ho*Wo)
        dcols = xp.matmul(xp.matrix_transpose(xp.reshape(w, (o, c * kh * kw))), dy2)
        dcols = xp.reshape(dcols, (c, kh * kw, n, ho, wo))  # (C, kh*kw, N, Ho, Wo)
        dxpad = xp.zeros((c, n, h + 2 * p, wd + 2 * p), dtype=dy.dtype, device=device(dy))
        for a in range(kh):
            for b in range(kw):
                dxpad[:, :, strided(a, ho, s), strided(b, wo, s)] += dcols[:, a * kw + b, ...]
        dxt = dxpad[:, :, p : p + h, p : p + wd] if p else dxpad
    return xp.permute_dims(dxt, (1, 0, 2, 3)), dw


def _backward_same(
    xt: Array, dyt: Array, w: Array, s: int, p: int, padded: bool
) -> tuple[Array, Array] | None:
    """Both gradients at once where the backend has such a kernel, for a stride-1 square
    convolution whose output has its input's size; ``None`` otherwise."""
    fast = lookup("backward_same", xt)
    o, c, kh, kw = w.shape
    if fast is None or padded or s != 1 or kh != kw or 2 * p != kh - 1:
        return None
    xp = namespace(w)
    wf2 = xp.reshape(xp.permute_dims(xp.flip(w, axis=(2, 3)), (1, 0, 2, 3)), (c, o * kh * kw))
    nb = _block(xt, kh * kw * max(c, o) * xt.shape[2] * xt.shape[3] * _itemsize(xt))
    return fast(xt, dyt, wf2, kh, p, kh - 1 - p, nb)


def _weight_grad(xt: Array, dyt: Array, kh: int, kw: int, s: int, p: int) -> Array:
    """``sum_blocks dy (O, m*Ho*Wo) @ cols^T`` -> (O, C*kh*kw), ``cols`` rebuilt per block."""
    xp = namespace(xt, dyt)
    c, n = xt.shape[0], xt.shape[1]
    o, _, ho, wo = dyt.shape
    nb = _block(xt, kh * kw * c * ho * wo * _itemsize(xt))
    fast = lookup("weight_grad", xt)
    if fast is not None:  # the backend's own form (sdnet.backends.kernels)
        return fast(xt, dyt, kh, kw, s, p, nb)

    def block(n0: int) -> Array:
        n1 = min(n, n0 + nb)
        dy2 = xp.reshape(dyt[:, n0:n1, :, :], (o, (n1 - n0) * ho * wo))  # (O, m*Ho*Wo)
        cols = _im2col(_pad(xt[:, n0:n1, :, :], p), kh, kw, ho, wo, s)  # (C*kh*kw, m*Ho*Wo)
        return xp.matmul(dy2, xp.matrix_transpose(cols))  # (O, C*kh*kw)

    parts = map_blocks(block, range(0, n, nb), xt)
    dw2 = parts[0]
    for part in parts[1:]:  # in block order: the same sum whatever the thread count
        dw2 = dw2 + part
    return dw2
