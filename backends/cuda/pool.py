"""2-d max and average pooling on the GPU, forward and backward (NCHW, PyTorch semantics,
floor mode), as on the CPU backend.

Forward: one thread per output element. Backward is a *gather*, one thread per input element:
it visits the windows that contain its element (at most ceil(KH/SH) x ceil(KW/SW)) and adds
their gradients. No atomics, no zero-fill pass, and a deterministic order; max pooling
recomputes each visited window's first maximum from x (as the CPU kernel and PyTorch pick it:
taps in row-major order, ties to the first, a NaN wins).
"""

from __future__ import annotations

from .runtime import jit, load_cuda

cuda = load_cuda()  # a module global: the simulator swaps it for its fake inside kernels


@jit(device=True)
def plane_position(t, rows, cols):
    """Flat index t of a (planes, rows, cols) array as (plane, row, col)."""
    plane = t // (rows * cols)
    p = t - plane * (rows * cols)
    row = p // cols
    return plane, row, p - row * cols


@jit(device=True)
def _window_argmax(x, base, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw):
    """Flat index (within the plane at ``base``) of the first maximum of window (oh, ow)."""
    best_i = -1
    best = x[base]
    for i in range(kh):
        ih = oh * sh - ph + i * dh
        if 0 <= ih < h:
            for j in range(kw):
                iw = ow * sw - pw + j * dw
                if 0 <= iw < w:
                    v = x[base + ih * w + iw]
                    if best_i < 0 or v > best or v != v:
                        best = v
                        best_i = ih * w + iw
    return best_i


@jit(cache=True)
def max_pool_forward(x, out, nc, h, w, oh_, ow_, kh, kw, sh, sw, ph, pw, dh, dw):
    """out (N*C*OH*OW,) = max of x (N*C*H*W,) over each window; padding never wins."""
    t = cuda.grid(1)
    step = cuda.gridsize(1)
    total = nc * oh_ * ow_
    while t < total:
        plane, oh, ow = plane_position(t, oh_, ow_)
        best = _window_argmax(x, plane * h * w, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw)
        out[t] = x[plane * h * w + best]
        t += step


@jit(device=True)
def _first_window(pos, pad, k, s, d, n_out, tap):
    """The output index whose window has tap ``tap`` at input position ``pos``, or -1."""
    q = pos + pad - tap * d
    if q < 0:
        return -1
    o = q // s
    if o * s != q or o >= n_out:
        return -1
    return o


@jit(device=True)
def _divisor(oh, ow, kh, kw, sh, sw, ph, pw, h, w, include_pad):
    if include_pad:
        return kh * kw
    h0 = oh * sh - ph
    w0 = ow * sw - pw
    return (min(h0 + kh, h) - max(h0, 0)) * (min(w0 + kw, w) - max(w0, 0))


@jit(device=True)
def _window_grads(g, x, plane, ih, iw, h, w, oh_, ow_, kh, kw, sh, sw, ph, pw, dh, dw, is_max, pad):
    """The gradient reaching input (ih, iw) of ``plane`` from the windows that hold it: for
    max pooling, g of each window whose first maximum (in x) it is; for average pooling, g over
    each window's divisor (``pad``: count_include_pad). In g's precision, as the forward."""
    real = g.dtype.type
    acc = real(0)
    for i in range(kh):
        oh = _first_window(ih, ph, kh, sh, dh, oh_, i)
        if oh >= 0:
            for j in range(kw):
                ow = _first_window(iw, pw, kw, sw, dw, ow_, j)
                if ow >= 0:
                    if is_max:
                        best = _window_argmax(
                            x, plane * h * w, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw
                        )
                        if best == ih * w + iw:
                            acc += g[(plane * oh_ + oh) * ow_ + ow]
                    else:
                        div = _divisor(oh, ow, kh, kw, sh, sw, ph, pw, h, w, pad)
                        acc += g[(plane * oh_ + oh) * ow_ + ow] / real(div)
    return acc


@jit(cache=True)
def max_pool_backward(g, x, dx, nc, h, w, oh_, ow_, kh, kw, sh, sw, ph, pw, dh, dw):
    """dx (N*C*H*W,) = sum of g over the windows whose first maximum is this element."""
    t = cuda.grid(1)
    step = cuda.gridsize(1)
    total = nc * h * w
    while t < total:
        plane, ih, iw = plane_position(t, h, w)
        dx[t] = _window_grads(
            g, x, plane, ih, iw, h, w, oh_, ow_, kh, kw, sh, sw, ph, pw, dh, dw, True, False
        )
        t += step


@jit(cache=True)
def max_pool_taps(x, out, nc, h, w, oh_, ow_, kh, kw, sh, sw, ph, pw, dh, dw):
    """out (N*C*OH*OW,) uint8 = the row-major tap (i * KW + j) of each window's first maximum."""
    t = cuda.grid(1)
    step = cuda.gridsize(1)
    total = nc * oh_ * ow_
    while t < total:
        plane, oh, ow = plane_position(t, oh_, ow_)
        best = _window_argmax(x, plane * h * w, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw)
        ih = best // w
        out[t] = ((ih - oh * sh + ph) // dh) * kw + (best - ih * w - ow * sw + pw) // dw
        t += step


@jit(cache=True)
def max_pool_grad_taps(g, taps, dx, nc, h, w, oh_, ow_, kh, kw, sh, sw, ph, pw, dh, dw):
    """dx (N*C*H*W,) = sum of g over the windows whose tap (``taps``) is this element: a
    gather, one thread per input element, as max_pool_backward."""
    t = cuda.grid(1)
    step = cuda.gridsize(1)
    total = nc * h * w
    while t < total:
        plane, ih, iw = plane_position(t, h, w)
        acc = g.dtype.type(0)
        for i in range(kh):
            oh = _first_window(ih, ph, kh, sh, dh, oh_, i)
            if oh >= 0:
                for j in range(kw):
                    ow = _first_window(iw, pw, kw, sw, dw, ow_, j)
                    q = (plane * oh_ + oh) * ow_ + ow
                    if ow >= 0 and taps[q] == i * kw + j:
                        acc += g[q]
        dx[t] = acc
        t += step


@jit(cache=True)
def avg_pool_forward(x, out, nc, h, w, oh_, ow_, kh, kw, sh, sw, ph, pw, include_pad):
    """out = mean of x over each window (divisor: kh*kw, or the in-bounds count)."""
    t = cuda.grid(1)
    step = cuda.gridsize(1)
    total = nc * oh_ * ow_
    while t < total:
        plane, oh, ow = plane_position(t, oh_, ow_)
        acc = x.dtype.type(0)  # the window's sum in x's precision (a few terms)
        for i in range(kh):
            ih = oh * sh - ph + i
            if 0 <= ih < h:
                for j in range(kw):
                    iw = ow * sw - pw + j
                    if 0 <= iw < w:
                        acc += x[(plane * h + ih) * w + iw]
        out[t] = acc / x.dtype.type(_divisor(oh, ow, kh, kw, sh, sw, ph, pw, h, w, include_pad))
        t += step


@jit(cache=True)
def avg_pool_backward(g, dx, nc, h, w, oh_, ow_, kh, kw, sh, sw, ph, pw, include_pad):
    """dx = sum over the windows containing the element of g / the window's divisor."""
    t = cuda.grid(1)
    step = cuda.gridsize(1)
    total = nc * h * w
    while t < total:
        plane, ih, iw = plane_position(t, h, w)
        dx[t] = _window_grads(
            g, g, plane, ih, iw, h, w, oh_, ow_, kh, kw, sh, sw, ph, pw, 1, 1, False, include_pad
        )
        t += step
