"""Tiled GEMM on the GPU: one kernel template that serves matmul and all three convolutions.

``C[b] (M x N) = A[b] (M x K) @ B[b] (K x N)``, where a *mode* says where element (m, r) of A,
(r, n) of B and (m, n) of C live: a plain strided matrix (``matmul``: transposed operands,
batches, 1x1 convolutions) or an implicit im2col view of an NCHW tensor (``conv.py``: the
forward pass and both gradients, never materialized). A mode is a handful of integer device
functions; the template, specialized per (mode, tile, dtype), does the arithmetic:

- a block computes a BM x BN tile of C, stepping over K in BK slices staged through shared
  memory (A as [BK][BM], B as [BK][BN]);
- each of its (BM/TM)*(BN/TN) threads accumulates TM x TN outputs in registers: TM
  consecutive rows and TN consecutive columns, so that each K step reads them from shared
  memory as 128-bit words (broadcasts within a warp for A, consecutive words for B: no bank
  conflicts), and the unrolled K loop is nearly all FMAs (77-91% of the instructions for the
  64x64 and 128x128 tiles in sm_90 SASS; cuda_compile_check.py and nvdisasm show it);
- each thread loads the same A row and B column on every K step (slots differ in r only),
  so the mode's per-row/column set-up (divisions) runs once per thread, outside the K loop;
  which of (outer index, r) varies fastest across threads follows the operand's contiguous
  axis, for coalesced loads;
- when the tiles alone cannot fill the GPU (a weight gradient: small M x N, K = the batch's
  pixels), K is split over ``blockIdx.z``: partial tiles go to a workspace and a second pass
  sums them (deterministic, unlike atomics) and applies the mode's store.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ...errors import BackendError
from .runtime import blocks_for, jit, launcher, load_cuda, simulated, sm_count

cuda = load_cuda()  # a module global: the simulator swaps it for its fake inside kernels


class Tile(NamedTuple):
    bm: int
    bn: int
    bk: int
    tm: int
    tn: int

    @property
    def threads(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)


LARGE = Tile(64, 64, 8, 4, 4)  # 256 threads x 16 outputs: large operands
WIDE = Tile(16, 128, 8, 2, 8)  # 128 threads: few rows (output channels), many columns
SMALL = Tile(16, 16, 16, 2, 2)  # 64 threads: small problems
TINY = Tile(16, 32, 16, 4, 4)  # one warp: problems of a few thousand outputs or fewer
# 256 threads x 64 outputs, the classic SGEMM tile: not chosen until bench/gpu.py's
# --tile-sweep has measured it against LARGE on a GPU.
HUGE = Tile(128, 128, 8, 8, 8)
TILES = {"huge": HUGE, "large": LARGE, "wide": WIDE, "small": SMALL, "tiny": TINY}


def choose_tile(m: int, n: int) -> Tile:
    if m >= 64 and n >= 64:
        return LARGE
    if n >= 512:
        return WIDE
    if m * n > 4096:
        return SMALL
    return TINY


def plan_splits(tiles: int, k: int, bk: int, batch: int) -> int:
    """How many slices of K: enough blocks for ~2 per SM, each slice at least 8 BK steps."""
    if tiles >= 2 * sm_count():
        return 1
    splits = min(math.ceil(2 * sm_count() / max(tiles, 1)), max(1, k // (8 * bk)), 1024)
    return max(1, min(splits, 65535 // max(batch, 1)))


class Mode(NamedTuple):
    """Integer device functions locating operands (see the module docstring). ``*_prep(geo,
    batch, i)`` run once per thread and return a 4-tuple passed to ``*_index(geo, tab, info,
    r)``, which returns a flat index into the operand, or -1 for a zero (padding)."""

    name: str
    a_prep: Callable
    a_index: Callable
    b_prep: Callable
    b_index: Callable
    c_index: Callable  # (geo, batch, m, n) -> flat index into C
    bias_index: Callable  # (geo, batch, m, n) -> flat index into bias, or -1


_MODES: dict[str, Mode] = {}


def register_mode(name: str, build: Callable[[], tuple]) -> Callable[[], Mode]:
    """``build()`` returns the six device functions; built on first use (needs numba.cuda)."""

    def get() -> Mode:
        if name not in _MODES:
            _MODES[name] = Mode(name, *build())
        return _MODES[name]

    return get


def _matmul_mode():
    # geo: (M, N, K, sa_b, sa_m, sa_k, sb_b, sb_k, sb_n, sc_b, has_bias)
    @jit(device=True)
    def a_prep(geo, batch, m):
        return (batch * geo[3] + m * geo[4], 0, 0, 0)

    @jit(device=True)
    def a_index(geo, tab, info, r):
        return info[0] + r * geo[5]

    @jit(device=True)
    def b_prep(geo, batch, n):
        return (batch * geo[6] + n * geo[8], 0, 0, 0)

    @jit(device=True)
    def b_index(geo, tab, info, r):
        return info[0] + r * geo[7]

    @jit(device=True)
    def c_index(geo, batch, m, n):
        return batch * geo[9] + m * geo[1] + n

    @jit(device=True)
    def bias_index(geo, batch, m, n):
        return m if geo[10] else -1

    return a_prep, a_index, b_prep, b_index, c_index, bias_index


matmul_mode = register_mode("matmul", _matmul_mode)

_KERNELS: dict[tuple, Callable] = {}


def _shared_alignment() -> bool:
    """Whether ``cuda.shared.array`` takes ``alignment=``: not on the simulator, which refuses
    it, nor in numba-cuda releases older than the keyword (mid-2025)."""
    if simulated():
        return False
    return "alignment" in inspect.signature(load_cuda().shared.array).parameters


def _tiled_kernel(mode: Mode, tile: Tile, dtype: str, a_kmajor: bool, b_kmajor: bool, split: bool):
    key = (mode.name, tile, dtype, a_kmajor, b_kmajor, split)
    if key in _KERNELS:
        return _KERNELS[key]
    import numba

    nbtype = numba.from_dtype(np.dtype(dtype))
    uint64 = numba.uint64
    BM, BN, BK, TM, TN = tile
    A_SIZE, B_SIZE = BK * BM, BK * BN
    ALIGNED = _shared_alignment()  # 16-byte shared arrays, so rows load as 128-bit words
    TY, TX = BM // TM, BN // TN
    NT = TY * TX
    TKA, TKB = NT // BM, NT // BN  # threads sharing one A row / one B column
    LA, LB = BK // TKA, BK // TKB  # loads per thread per K step
    a_prep, a_index, b_prep, b_index = mode.a_prep, mode.a_index, mode.b_prep, mode.b_index
    c_index, bias_index = mode.c_index, mode.bias_index
    zero = nbtype(0)

    @jit
    def kernel(a, b, c, bias, geo, tab, chunk, splits):
        M = geo[0]
        N = geo[1]
        K = geo[2]
        tid = cuda.threadIdx.x
        z = cuda.blockIdx.z
        batch = z // splits
        m0 = cuda.blockIdx.y * BM
        n0 = cuda.blockIdx.x * BN
        k_begin = (z - batch * splits) * chunk
        k_end = min(K, k_begin + chunk)
        if ALIGNED:  # a constant: Numba prunes the other branch before typing it
            As = cuda.shared.array(A_SIZE, nbtype, alignment=16)  # [BK][BM], flat: see below
            Bs = cuda.shared.array(B_SIZE, nbtype, alignment=16)  # [BK][BN]
        else:
            As = cuda.shared.array(A_SIZE, nbtype)
            Bs = cuda.shared.array(B_SIZE, nbtype)
        acc = cuda.local.array((TM, TN), nbtype)
        ra = cuda.local.array(TM, nbtype)
        rb = cuda.local.array(TN, nbtype)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = zero
        if a_kmajor:
            am = tid // TKA
            ak = tid % TKA
        else:
            am = tid % BM
            ak = tid // BM
        if b_kmajor:
            bn = tid // TKB
            bk = tid % TKB
        else:
            bn = tid % BN
            bk = tid // BN
        a_ok = m0 + am < M
        b_ok = n0 + bn < N
        ainfo = a_prep(geo, batch, m0 + am)
        binfo = b_prep(geo, batch, n0 + bn)
        ty = tid // TX
        tx = tid % TX
        for k0 in range(k_begin, k_end, BK):
            for q in range(LA):
                kk = ak + q * TKA
                idx = a_index(geo, tab, ainfo, k0 + kk) if a_ok and k0 + kk < k_end else -1
                As[kk * BM + am] = a[idx] if idx >= 0 else zero
            for q in range(LB):
                kk = bk + q * TKB
                idx = b_index(geo, tab, binfo, k0 + kk) if b_ok and k0 + kk < k_end else -1
                Bs[kk * BN + bn] = b[idx] if idx >= 0 else zero
            cuda.syncthreads()
            # The inner product over the staged slice, written for the machine code: a while
            # loop (Numba's range loop is not one LLVM unrolls), unsigned indices (Numba adds
            # a negative-index wrap-around to signed ones), and each thread's TM rows and TN
            # columns contiguous and 16-byte aligned, so they load as 128-bit words.
            ka = uint64(ty * TM)
            kb = uint64(tx * TN)
            kk = 0
            while kk < BK:
                for i in range(TM):
                    ra[i] = As[ka + uint64(i)]
                for j in range(TN):
                    rb[j] = Bs[kb + uint64(j)]
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] += ra[i] * rb[j]
                ka += uint64(BM)
                kb += uint64(BN)
                kk += 1
            cuda.syncthreads()
        for i in range(TM):
            m = m0 + ty * TM + i
            if m < M:
                for j in range(TN):
                    n = n0 + tx * TN + j
                    if n < N:
                        if split:
                            c[(z * M + m) * N + n] = acc[i, j]
                        else:
                            bi = bias_index(geo, batch, m, n)
                            extra = bias[bi] if bi >= 0 else zero
                            c[c_index(geo, batch, m, n)] = acc[i, j] + extra

    _KERNELS[key] = kernel
    return kernel


def _split_reduce_kernel(mode: Mode):
    key = (mode.name, "reduce")
    if key in _KERNELS:
        return _KERNELS[key]
    c_index, bias_index = mode.c_index, mode.bias_index

    @jit
    def kernel(ws, c, bias, geo, splits, nbatch):
        """C = sum over splits of the workspace (batch, split, M, N), plus bias."""
        M = geo[0]
        N = geo[1]
        t = cuda.grid(1)
        if t < nbatch * M * N:
            n = t % N
            q = t // N
            m = q % M
            batch = q // M
            base = batch * splits * M * N + m * N + n
            acc = ws[base]
            for s in range(1, splits):
                acc += ws[base + s * M * N]
            bi = bias_index(geo, batch, m, n)
            if bi >= 0:
                acc += bias[bi]
            c[c_index(geo, batch, m, n)] = acc

    _KERNELS[key] = kernel
    return kernel


class Gemm:
    """A planned GEMM launch: tile and split chosen, workspace allocated once.

    ``geo`` starts with (M, N, K) and holds whatever else the mode reads; ``tab`` is an
    optional int64 (K, 4) table of per-r offsets (conv taps). Call with flat device arrays
    ``gemm(a, b, c, bias)`` (bias may be None)."""

    def __init__(
        self,
        mode: Mode,
        geo: tuple[int, ...],
        batch: int,
        dtype: str,
        a_kmajor: bool,
        b_kmajor: bool,
        tab: np.ndarray | None = None,
        tile: Tile | None = None,
        splits: int | None = None,
    ) -> None:
        m, n, k = geo[:3]
        self.geo = tuple(int(v) for v in geo)
        self.batch = batch
        self.tile = tile or choose_tile(m, n)
        bm, bn, bk = self.tile.bm, self.tile.bn, self.tile.bk
        tiles = math.ceil(m / bm) * math.ceil(n / bn) * batch
        self.splits = splits or plan_splits(tiles, k, bk, batch)
        self.chunk = max(bk, math.ceil(k / self.splits / bk) * bk) if k else bk
        self.splits = max(1, math.ceil(k / self.chunk)) if k else 1
        if batch * self.splits > 65535:
            raise BackendError(f"GEMM batch {batch} exceeds the grid's z limit (65535)")
        self.empty = m == 0 or n == 0 or batch == 0
        grid = (math.ceil(n / bn), math.ceil(m / bm), batch * self.splits)
        split = self.splits > 1
        kernel = _tiled_kernel(mode, self.tile, dtype, a_kmajor, b_kmajor, split)
        self._main = launcher(kernel, grid, self.tile.threads)
        table = tab if tab is not None and tab.size else np.zeros((1, 4), np.int64)
        self._tab = cuda.to_device(np.ascontiguousarray(table, dtype=np.int64))
        self._no_bias = cuda.to_device(np.zeros(1, dtype=dtype))
        self._ws = cuda.device_array(batch * self.splits * m * n, dtype=dtype) if split else None
        if split:
            total = batch * m * n
            self._reduce = launcher(
                _split_reduce_kernel(mode), blocks_for(total, 128, 1 << 30), 128
            )
        self.flops = 2 * batch * m * n * k

    def __call__(self, a, b, c, bias=None) -> None:
        if self.empty:
            return
        bias = self._no_bias if bias is None else bias
        target = self._ws if self._ws is not None else c
        self._main(a, b, target, bias, self.geo, self._tab, self.chunk, self.splits)
        if self._ws is not None:
            self._reduce(self._ws, c, bias, self.geo, self.splits, self.batch)


def matmul_gemm(a_shape, b_shape, trans_a: bool, trans_b: bool, dtype: str, **plan) -> Gemm:
    """``op(a) @ op(b)`` for 2-d or batched 3-d C-contiguous operands."""
    batch = a_shape[0] if len(a_shape) == 3 else 1
    ra, ca = a_shape[-2:]
    rb, cb = b_shape[-2:]
    m, k = (ca, ra) if trans_a else (ra, ca)
    n = rb if trans_b else cb
    sa_m, sa_k = (1, ca) if trans_a else (ca, 1)
    sb_k, sb_n = (1, cb) if trans_b else (cb, 1)
    geo = (m, n, k, ra * ca if batch > 1 else 0, sa_m, sa_k, rb * cb if batch > 1 else 0)
    geo += (sb_k, sb_n, m * n, 0)
    return Gemm(matmul_mode(), geo, batch, dtype, not trans_a, trans_b, **plan)
