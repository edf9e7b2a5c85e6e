"""Eight float64 lanes for the backtest kernel: LLVM vector operations callable from numba code.

numba leaves LLVM's SLP vectorizer off, so scalar code never becomes SIMD; these
intrinsics give the kernel explicit vectors instead. Every lane operation is the IEEE
operation a scalar would do (a vector division or sum rounds each lane exactly as the
scalar one), so code that keeps each lane's sums in bar order gets the same bits however
it walks the bars. Lane masks are plain integers (bit ``j`` for lane ``j``), so the
control flow around them stays ordinary numba code.

The loops take arrays as plain addresses (:func:`address`), read with :func:`load` and
:func:`load_one` and written with :func:`store_one`: numba counts the references of an
array handed to an inlined function, and around a loop that count cost more than the
loop. The caller keeps the arrays alive and the indexes in bounds.

    >>> import numba, numpy as np
    >>> @numba.njit
    ... def demo(a):
    ...     v = load(address(a), 0) * splat(2.0)
    ...     return lane(v, 3), bits_gt(v, splat(4.0)), lane_sum(v)
    >>> demo(np.arange(1.0, 9.0))
    (8.0, 252, 72.0)
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Final, TypeAlias, cast

import numba
from llvmlite import ir
from numba import types
from numba.core.datamodel.models import PrimitiveModel
from numba.extending import intrinsic, overload, register_model

#: Lanes in a vector, and the mask with every lane set.
WIDTH: Final = 8
ALL_LANES: Final = (1 << WIDTH) - 1

#: A vector as numba code sees it (Python code only passes one along).
Lanes: TypeAlias = Any

_VECTOR = ir.VectorType(ir.DoubleType(), WIDTH)
_LANE_MASK = ir.VectorType(ir.IntType(1), WIDTH)
_MASK_BITS = ir.IntType(WIDTH)
_I64 = ir.IntType(64)


class LanesType(types.Type):  # type: ignore[misc]
    """numba's type of a vector of ``WIDTH`` float64 lanes."""

    def __init__(self) -> None:
        super().__init__(name=f"F64x{WIDTH}")


lanes_type = LanesType()


@register_model(LanesType)
class _LanesModel(PrimitiveModel):  # type: ignore[misc]
    def __init__(self, dmm: Any, fe_type: Any) -> None:
        super().__init__(dmm, fe_type, _VECTOR)  # type: ignore[no-untyped-call]


def _intrinsic(signature_and_codegen: Callable[..., Any]) -> Callable[..., Any]:
    """numba's ``intrinsic``, typed as numba code calls it (without the typing context)."""
    return cast(Callable[..., Any], intrinsic(signature_and_codegen))


def _lane_mask(builder: ir.IRBuilder, bits: ir.Value) -> ir.Value:
    return builder.bitcast(builder.trunc(bits, _MASK_BITS), _LANE_MASK)


def _mask_bits(builder: ir.IRBuilder, mask: ir.Value) -> ir.Value:
    return builder.zext(builder.bitcast(mask, _MASK_BITS), _I64)


@_intrinsic
def address(typingctx: Any, array: Any) -> Any:
    """The address of a C-contiguous float64 array's data, for :func:`load`: a plain integer, so code that
    passes it along does no reference counting (the caller keeps the array alive)."""
    if not (isinstance(array, types.Array) and array.dtype == types.float64 and array.layout == "C"):
        return None

    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> ir.Value:
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        return builder.ptrtoint(data, _I64)
    return types.int64(array), codegen


def _element(builder: ir.IRBuilder, base: ir.Value, index: ir.Value) -> ir.Value:
    return builder.gep(builder.inttoptr(base, ir.DoubleType().as_pointer()), [index], inbounds=True)


@_intrinsic
def load(typingctx: Any, base: Any, start: Any) -> Any:
    """The ``WIDTH`` values from index ``start`` of the data at :func:`address` ``base`` (kept in bounds by the
    caller)."""
    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> ir.Value:
        return builder.load(builder.bitcast(_element(builder, args[0], args[1]), _VECTOR.as_pointer()), align=8)
    return lanes_type(types.int64, types.int64), codegen


@_intrinsic
def load_one(typingctx: Any, base: Any, index: Any) -> Any:
    """The value at ``index`` of the data at :func:`address` ``base``."""
    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> ir.Value:
        return builder.load(_element(builder, args[0], args[1]), align=8)
    return types.float64(types.int64, types.int64), codegen


@_intrinsic
def store_one(typingctx: Any, base: Any, index: Any, value: Any) -> Any:
    """Write ``value`` at ``index`` of the data at :func:`address` ``base`` (kept in bounds by the caller)."""
    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> ir.Value:
        number = context.cast(builder, args[2], sig.args[2], types.float64)
        builder.store(number, _element(builder, args[0], args[1]), align=8)
        return context.get_dummy_value()
    return types.none(types.int64, types.int64, value), codegen


@_intrinsic
def prefetch(typingctx: Any, base: Any, index: Any) -> Any:
    """Ask the CPU to start loading the cache line at ``index`` of the data at :func:`address` ``base`` (a hint:
    it never faults, so an index past the end is harmless)."""
    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> ir.Value:
        pointer = builder.gep(builder.inttoptr(args[0], ir.DoubleType().as_pointer()), [args[1]])
        hint = ir.FunctionType(ir.VoidType(), [pointer.type, *[ir.IntType(32)] * 3])
        function = builder.module.globals.get("llvm.prefetch.p0") or ir.Function(builder.module, hint,
                                                                                 "llvm.prefetch.p0")
        builder.call(function, [pointer, *(ir.Constant(ir.IntType(32), k) for k in (0, 3, 1))])
        return context.get_dummy_value()
    return types.none(types.int64, types.int64), codegen


@_intrinsic
def splat(typingctx: Any, x: Any) -> Any:
    """Every lane ``x``."""
    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> ir.Value:
        value = context.cast(builder, args[0], sig.args[0], types.float64)
        one = builder.insert_element(ir.Constant(_VECTOR, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(ir.IntType(32), WIDTH), [0] * WIDTH))
    return lanes_type(x), codegen


@_intrinsic
def lane(typingctx: Any, vector: Any, j: Any) -> Any:
    """The value in lane ``j``."""
    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> ir.Value:
        return builder.extract_element(args[0], args[1])
    return types.float64(vector, j), codegen


@_intrinsic
def with_lane(typingctx: Any, vector: Any, j: Any, x: Any) -> Any:
    """``vector`` with lane ``j`` set to ``x``."""
    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> ir.Value:
        value = context.cast(builder, args[2], sig.args[2], types.float64)
        return builder.insert_element(args[0], value, args[1])
    return lanes_type(vector, j, x), codegen


@_intrinsic
def previous_lanes(typingctx: Any, vector: Any, before: Any, j: Any) -> Any:
    """Each lane's left neighbour, ``before`` in lane ``j`` (lanes below ``j`` are meaningless)."""
    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> ir.Value:
        order = ir.Constant(ir.VectorType(ir.IntType(32), WIDTH), [0, *range(WIDTH - 1)])
        shifted = builder.shuffle_vector(args[0], args[0], order)
        return builder.insert_element(shifted, args[1], args[2])
    return lanes_type(vector, types.float64, j), codegen


def _arithmetic(op: str) -> Callable[..., Any]:
    @_intrinsic
    def arithmetic(typingctx: Any, a: Any, b: Any) -> Any:
        if not (isinstance(a, LanesType) and isinstance(b, LanesType)):
            return None
        return lanes_type(a, b), lambda context, builder, sig, args: getattr(builder, op)(args[0], args[1])
    return arithmetic


def _overload_operator(python_op: Callable[..., Any], vector_op: Callable[..., Any]) -> None:
    @overload(python_op)  # type: ignore[misc]
    def vector_operator(a: Any, b: Any) -> Any:
        if not (isinstance(a, LanesType) and isinstance(b, LanesType)):
            return None

        def on_vectors(a: Any, b: Any) -> Any:  # the same parameters as the overload, as numba asks
            return vector_op(a, b)
        return on_vectors


for _python_op, _llvm_op in ((operator.add, "fadd"), (operator.sub, "fsub"), (operator.mul, "fmul"),
                             (operator.truediv, "fdiv")):
    _overload_operator(_python_op, _arithmetic(_llvm_op))


def _comparison(op: str, ordered: bool) -> Callable[..., Any]:
    @_intrinsic
    def comparison(typingctx: Any, a: Any, b: Any) -> Any:
        def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> ir.Value:
            compare = builder.fcmp_ordered if ordered else builder.fcmp_unordered
            return _mask_bits(builder, compare(op, args[0], args[1]))
        return types.int64(lanes_type, lanes_type), codegen
    return comparison


#: Lane masks of ``a > b``, ``a < b`` and ``a != b``, each as Python compares floats (NaN is != everything).
bits_gt = _comparison(">", ordered=True)
bits_lt = _comparison("<", ordered=True)
bits_ne = _comparison("!=", ordered=False)


@_intrinsic
def add_where(typingctx: Any, total: Any, x: Any, bits: Any) -> Any:
    """``total + x`` in the lanes of mask ``bits``, ``total`` untouched elsewhere."""
    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> ir.Value:
        return builder.select(_lane_mask(builder, args[2]), builder.fadd(args[0], args[1]), args[0])
    return lanes_type(lanes_type, lanes_type, types.int64), codegen


@_intrinsic
def lane_min(typingctx: Any, a: Any, b: Any) -> Any:
    """Lane by lane ``a if a < b else b``."""
    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> ir.Value:
        return builder.select(builder.fcmp_ordered("<", args[0], args[1]), args[0], args[1])
    return lanes_type(lanes_type, lanes_type), codegen


@_intrinsic
def first_lane(typingctx: Any, bits: Any) -> Any:
    """The lowest lane set in a non-empty mask."""
    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> ir.Value:
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))
    return types.int64(types.int64), codegen


@numba.njit(cache=True, inline="always")
def lanes_from(first: int, last: int) -> int:
    """The mask of lanes ``first`` to ``last`` (both included)."""
    return ((2 << last) - 1) & ~((1 << first) - 1)


@numba.njit(cache=True, inline="always")
def lane_sum(vector: Any) -> float:
    """The lanes added pairwise, ``((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))``: the one order every
    path combines them in."""
    low = (lane(vector, 0) + lane(vector, 1)) + (lane(vector, 2) + lane(vector, 3))
    high = (lane(vector, 4) + lane(vector, 5)) + (lane(vector, 6) + lane(vector, 7))
    return float(low + high)


@numba.njit(cache=True, inline="always")
def load_part(base: int, start: int, count: int, fill: float) -> Any:
    """The ``count`` values (at most ``WIDTH``) from index ``start`` of the data at :func:`address` ``base`` in the
    first lanes, ``fill`` in the others."""
    vector = splat(fill)
    for j in range(count):
        vector = with_lane(vector, j, load_one(base, start + j))
    return vector
