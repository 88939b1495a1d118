"""Where a float64 call narrows: the first operation inside a port's call that turns a float64
value into a narrower float, and the source lines that made it.

A float64 layer whose outputs carry float32-sized errors converts somewhere: a cast written in
the port (``x.float()``, ``x.astype(jnp.float32)``), a sublayer built without the dtype (its
call casts its input to its own float32), or a framework function that promotes to float32
where NumPy promotes to float64 (Keras 3 outside TensorFlow computes ``result_type(float64,
"float32")`` as float32: ``keras/src/backend/common/dtypes.py``, ``BIT64_TO_BIT32_DTYPE``).
The words name the library line that converts and the port's line that reached it, so that a
reader goes to the line at fault, not to every operation of the layer.

- JAX (Flax NNX, Keras on JAX): the call is traced to a jaxpr (``jax.make_jaxpr``); the first
  equation, in program order and within nested jaxprs, whose inputs include a float64 value
  and whose outputs a narrower float, with its ``source_info`` (JAX's own frames left out).
- TensorFlow (Keras on TensorFlow): the call is traced to a graph (``tf.function``'s concrete
  function; tracing runs no operation, so no state moves); the first operation, in creation
  order, with a float64 input and a narrower float output, with its creation stack
  (``Operation.traceback``; TensorFlow's own frames left out). TensorFlow promotes nothing
  implicitly, so what narrows is a cast the port wrote or a sublayer built in float32.
- PyTorch (ports, Keras on PyTorch): the call runs eagerly under a dispatch mode that sees
  each ATen operation (``torch.utils._python_dispatch.TorchDispatchMode``); the first one with
  a float64 tensor among its operands and a narrower float tensor as its result (``_to_copy``
  of ``.float()``, ``copy_`` into a float32 buffer), with the Python stack at that moment.
"""

from __future__ import annotations

import linecache
import os
import traceback

NARROW = ("float32", "float16", "bfloat16")
# the frames that only carry a cast: the conversion is put down to the first frame outside
PLUMBING = {"convert_to_tensor", "cast", "astype", "_cast", "convert_element_type", "to",
            "float", "__torch_dispatch__", "_maybe_autocast", "maybe_convert"}


def _shown(path: str) -> str:
    for marker in ("site-packages" + os.sep, "dist-packages" + os.sep):
        if marker in path:
            return path.split(marker, 1)[1]
    return os.path.basename(path)


def source(path: str, line: int) -> str:
    """The line's code in backquotes, its inline comment left out; nothing where it holds a
    square bracket, which the report keeps for its evidence (``portspec.report``): the file
    and line still say where."""
    text = linecache.getline(path, line).split("  #", 1)[0].strip()
    return f" `{text}`" if text and not set(text) & set("[]") else ""


def describe(frames, port_files, dtype: str, op: str, origin: str = "float64") -> str:
    """Words for one conversion. ``frames``: (file, line, function) innermost first;
    ``port_files``: the port's own source files; ``dtype``: the dtype converted to, from
    ``origin``; ``op``: the operation that converted (a JAX primitive or an ATen operator)."""
    frames = [f for f in frames if f[0] and not f[0].startswith("<")]
    mine = {os.path.realpath(p) for p in port_files if p}
    at = next((f for f in frames if f[2].rsplit(".", 1)[-1] not in PLUMBING), None)
    port = next((f for f in frames if os.path.realpath(f[0]) in mine), None)
    if at is None and port is None:
        return f"a {origin} value is converted to {dtype} by {op} inside the call"
    if at is None or (port is not None and at == port):
        file, line, function = port
        return (f"a {origin} value is converted to {dtype} in the port's own code, "
                f"{_shown(file)}:{line} in {function}{source(file, line)}")
    file, line, function = at
    words = (f"a {origin} value is converted to {dtype} at {_shown(file)}:{line} in "
             f"{function}{source(file, line)}")
    if port is not None:
        pfile, pline, pfunction = port
        words += (f", reached from the port's {_shown(pfile)}:{pline} in "
                  f"{pfunction}{source(pfile, pline)}")
    return words


def in_jaxpr(make_jaxpr, port_files) -> str | None:
    """The first narrowing conversion of a traced call (``make_jaxpr()`` returns its closed
    jaxpr), as words; None where it has none."""
    from jax._src import core, source_info_util

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            ins = [str(getattr(v.aval, "dtype", "")) for v in eqn.invars]
            outs = [str(getattr(v.aval, "dtype", "")) for v in eqn.outvars]
            narrow = next((d for d in outs if d in NARROW), None)
            if "float64" in ins and narrow:
                tb = eqn.source_info.traceback
                frames = [] if tb is None else [
                    (f.file_name, f.start_line, f.function_name)
                    for f in source_info_util.user_frames(tb)]
                return describe(frames, port_files, narrow, str(eqn.primitive))
            for sub in core.jaxprs_in_params(eqn.params):
                found = walk(sub)
                if found:
                    return found
        return None

    return walk(make_jaxpr().jaxpr)


def widened_output(make_jaxpr, port_files, origin: str, target: str = "float32") -> str | None:
    """Where a traced call's output comes out ``target`` although it computes in ``origin``
    (a bfloat16 layer returning float32): the first equation, in program order, that turns an
    ``origin`` value into a ``target`` one from which the output is reached through
    ``target`` values alone, as words; None where none is. An upcast the layer casts back
    (a normalisation computed in float32, then cast to bfloat16) does not reach the output in
    float32, so it is not named."""
    from jax._src import source_info_util

    jaxpr = make_jaxpr().jaxpr

    def dtype(v):
        return str(getattr(getattr(v, "aval", None), "dtype", ""))

    reach = {id(v) for v in jaxpr.outvars if dtype(v) == target}
    for eqn in reversed(jaxpr.eqns):
        if any(id(v) in reach for v in eqn.outvars):
            reach.update(id(v) for v in eqn.invars if dtype(v) == target)
    for eqn in jaxpr.eqns:
        if (any(id(v) in reach for v in eqn.outvars)
                and any(dtype(v) == origin for v in eqn.invars)):
            tb = eqn.source_info.traceback
            frames = [] if tb is None else [(f.file_name, f.start_line, f.function_name)
                                             for f in source_info_util.user_frames(tb)]
            return describe(frames, port_files, target, str(eqn.primitive), origin)
    return None


def in_tf(tf, run, port_files) -> str | None:
    """The first operation of ``run()``, a TensorFlow call traced by ``tf.function``, that
    turns a float64 value into a narrower float, as words; None where it has none."""
    def traced():
        # under a root scope of its own: tf.name_scope refuses a root scope name that starts
        # with "_", which Keras gives a layer of a class named _Private ("__private")
        with tf.name_scope("narrowing"):
            return run()

    graph = tf.function(traced).get_concrete_function().graph
    tf_dir = os.path.dirname(tf.__file__)
    for op in graph.get_operations():
        ins = {t.dtype.name for t in op.inputs}
        narrow = next((t.dtype.name for t in op.outputs if t.dtype.name in NARROW), None)
        if "float64" in ins and narrow:
            frames = [(f.filename, f.lineno, f.name) for f in reversed(list(op.traceback))
                      if not f.filename.startswith(tf_dir) and f.filename != __file__]
            return describe(frames, port_files, narrow, op.type)
    return None


def in_torch(torch, run, port_files, origin="float64", targets=NARROW) -> str | None:
    """The first operation of ``run()``, an eager PyTorch call, that turns an ``origin`` value
    into one of ``targets`` (by default: narrows a float64 one), as words; None where it has
    none."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    narrow = {getattr(torch, d): d for d in targets}
    wide = getattr(torch, origin)
    found = []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not found:
                ins = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
                outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
                low = next((narrow[t.dtype] for t in outs if t.dtype in narrow), None)
                if low and any(t.dtype == wide for t in ins):
                    stack = traceback.extract_stack()[::-1]
                    torch_dir = os.path.dirname(torch.__file__)
                    frames = [(f.filename, f.lineno, f.name) for f in stack
                              if not f.filename.startswith(torch_dir)
                              and f.filename != __file__]
                    name = getattr(getattr(func, "overloadpacket", None), "__name__", str(func))
                    found.append(describe(frames, port_files, low, name, origin))
            return out

    with Watch():
        run()
    return found[0] if found else None
