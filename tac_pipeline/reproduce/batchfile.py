"""Read CIFAR's pickled batches as plain data, without unpickling them.

CIFAR-10 and CIFAR-100 ship as pickles of a dict of lists, strings and numpy arrays. Unpickling a file can
run any code it names, so this module never unpickles: it walks the file's opcodes with
:func:`pickletools.genops` (a parser that executes nothing) and builds only dicts, lists, tuples, strings,
numbers and the numpy arrays CIFAR holds. A file that refers to anything else is refused.
"""

from __future__ import annotations

import pickletools
from typing import Any

import numpy as np

_NUMPY_RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
_NUMPY_NDARRAY = ("numpy", "ndarray")
_NUMPY_DTYPE = ("numpy", "dtype")
_NUMPY_FROMBUFFER = {
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}  # protocol 5
_CODECS_ENCODE = ("_codecs", "encode")  # how Python 3 writes bytes in a protocol-2 pickle


class BatchFormatError(ValueError):
    """The file is not a pickle of plain data and numpy arrays."""


class _Global(tuple):
    pass


class _Array:
    array: np.ndarray | None = None


class _Dtype:
    def __init__(self, code: str) -> None:
        self.code = code
        self.order = "|"

    def numpy(self) -> np.dtype:
        return np.dtype(("" if self.order in ("|", "=") else self.order) + self.code)


_MARK = object()

_PUSH_ARG = {
    "BININT", "BININT1", "BININT2", "INT", "LONG", "LONG1", "LONG4", "BINFLOAT", "FLOAT",
    "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "BINSTRING", "SHORT_BINSTRING", "STRING",
    "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8",
}  # fmt: skip
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_DICT": dict, "EMPTY_LIST": list}


def _pop_mark(stack: list) -> list:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1 :]
            del stack[i:]
            return items
    raise BatchFormatError("unbalanced MARK")


def _reduce(func: Any, args: tuple) -> Any:
    if not isinstance(func, _Global):
        raise BatchFormatError("a call to something that is not a known global")
    if tuple(func) in _NUMPY_RECONSTRUCT:
        return _Array()
    if tuple(func) == _NUMPY_DTYPE:
        return _Dtype(str(args[0]))
    if tuple(func) in _NUMPY_FROMBUFFER:
        buffer, dtype, shape, order = args
        if not isinstance(dtype, _Dtype):
            raise BatchFormatError("an array without a dtype")
        array = _Array()
        array.array = np.frombuffer(bytes(buffer), dtype=dtype.numpy()).reshape(tuple(shape), order=order)
        return array
    if tuple(func) == _CODECS_ENCODE:
        return str(args[0]).encode(str(args[1]) if len(args) > 1 else "utf-8")
    raise BatchFormatError(f"refers to {func[0]}.{func[1]}, which a CIFAR batch never holds")


def _build(obj: Any, state: Any) -> None:
    if isinstance(obj, _Dtype):
        obj.order = state[1] if isinstance(state, tuple) and len(state) > 1 and state[1] else "|"
    elif isinstance(obj, _Array):
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _Dtype):
            raise BatchFormatError("an array without a dtype")
        raw = raw.encode("latin-1") if isinstance(raw, str) else bytes(raw)
        flat = np.frombuffer(raw, dtype=dtype.numpy())
        obj.array = flat.reshape(tuple(shape), order="F" if fortran else "C")
    else:
        raise BatchFormatError("state set on an object that is not an array")


def _plain(value: Any) -> Any:
    if isinstance(value, _Array):
        if value.array is None:
            raise BatchFormatError("an array that was never filled")
        return value.array
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple) and not isinstance(value, _Global):
        return tuple(_plain(v) for v in value)
    if isinstance(value, _Global | _Dtype):
        raise BatchFormatError("a bare global in the data")
    return value


def read_batch(data: bytes) -> Any:
    """The plain data of a CIFAR batch pickle (``data``: the file's bytes). Raises BatchFormatError."""
    stack: list = []
    memo: dict[int, Any] = {}
    try:
        for opcode, arg, _ in pickletools.genops(data):
            name = opcode.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                return _plain(stack.pop())
            if name in _PUSH_ARG:
                stack.append(arg)
            elif name in _CONSTANTS:
                value = _CONSTANTS[name]
                stack.append(value() if callable(value) else value)
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name == "MARK":
                stack.append(_MARK)
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = tuple(stack[-n:])
                del stack[-n:]
                stack.append(items)
            elif name == "TUPLE":
                stack.append(tuple(_pop_mark(stack)))
            elif name == "LIST":
                stack.append(_pop_mark(stack))
            elif name == "DICT":
                items = _pop_mark(stack)
                stack.append(dict(zip(items[::2], items[1::2], strict=True)))
            elif name == "APPEND":
                value = stack.pop()
                stack[-1].append(value)
            elif name == "APPENDS":
                items = _pop_mark(stack)
                stack[-1].extend(items)
            elif name == "SETITEM":
                value, key = stack.pop(), stack.pop()
                stack[-1][key] = value
            elif name == "SETITEMS":
                items = _pop_mark(stack)
                stack[-1].update(zip(items[::2], items[1::2], strict=True))
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                stack.append(memo[int(arg)])
            elif name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                stack.append(_Global((module, attr)))
            elif name == "STACK_GLOBAL":
                attr, module = stack.pop(), stack.pop()
                stack.append(_Global((module, attr)))
            elif name == "REDUCE":
                args, func = stack.pop(), stack.pop()
                stack.append(_reduce(func, args))
            elif name == "BUILD":
                state = stack.pop()
                _build(stack[-1], state)
            else:
                raise BatchFormatError(f"uses the {name} opcode, which a CIFAR batch never holds")
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, BatchFormatError):
            raise
        raise BatchFormatError(f"not a pickle of plain data ({type(exc).__name__}: {exc})") from exc
    raise BatchFormatError("the pickle has no STOP")
