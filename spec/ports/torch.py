"""The base class for a port written as a ``torch.nn.Module`` (and for our PyTorch layers).

``TorchPortAdapter()`` runs on the CPU; ``TorchPortAdapter(variant="cuda")`` on the current
CUDA device (its ``name`` gains ``-cuda``; ``RuntimeError`` where there is none). bfloat16 and
float16 are mixed precision: float32 parameters, ``torch.autocast`` compute (PyTorch's
counterpart of Keras's mixed_bfloat16 / mixed_float16 policies). Each handle draws its dropout
masks from its own seeded generator, so two handles built with one seed draw the same masks
whatever else uses torch's global RNG. Compiled calls are ``torch.compile(module,
dynamic=False)``, made once per handle and training flag. The native format is the module's
``state_dict`` (torch's names and layouts) as safetensors, with the build arguments in its
metadata: never a pickle.
"""

from __future__ import annotations

import contextlib
import functools
import os

import numpy as np

from portspec.ports.base import (
    PortAdapter,
    PortHandle,
    identity,
    load_meta,
    one_output,
    save_arrays,
    transpose,
)

AUTOCAST = ("bfloat16", "float16")
# Keras's weight names (the canonical ones) in torch.nn: Linear keeps its kernel (out, in)
TORCH_NAMES = {
    "kernel": ("weight", transpose),
    "bias": ("bias", identity),
    "gamma": ("weight", identity),
    "beta": ("bias", identity),
    "moving_mean": ("running_mean", identity),
    "moving_variance": ("running_var", identity),
}


def torch_names(name: str):
    """``dense1.kernel`` -> ``("dense1.weight", transpose)``, ``norm.moving_mean`` ->
    ``("norm.running_mean", identity)``: torch.nn's names for a Keras-named weight."""
    owner, _, kind = name.rpartition(".")
    path, transform = TORCH_NAMES[kind]
    return f"{owner}.{path}" if owner else path, transform


class TorchPortAdapter(PortAdapter):
    """``call`` defaults to ``module(x)`` (``module(a, b)`` for a two-input layer);
    ``module.train(training)`` is set before. Parameter paths are ``state_dict`` names."""

    framework = "torch"

    def __init__(self, variant: str | None = None):
        import torch

        self.torch = torch
        if variant in (None, "", "cpu"):
            self.device = torch.device("cpu")
        elif variant == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError("CUDA is not available")
            # the device's index, for the RNG fork each call makes
            self.device = torch.device("cuda", torch.cuda.current_device())
            self.name = f"{self.name}-cuda"
        else:
            raise ValueError(f"variant must be 'cpu' or 'cuda', got {variant!r}")

    def call(self, module, inputs, *, training):
        """One call of the port's layer: ``module(x)``, or ``module(a, b)`` for a two-input
        layer; override it for another signature. ``module`` is the port's module, or, for
        the compiled clauses (FM-COMPILE, GFF-COMPILE), ``torch.compile``'s wrapper of it
        (``OptimizedModule``, which calls it and forwards its attributes): an override that
        tests the module's class tests ``getattr(module, "_orig_mod", module)``."""
        return module(*inputs) if isinstance(inputs, list) else module(inputs)

    def build(self, layer, config, *, input_shapes, seed, dtype=None):
        torch = self.torch
        if dtype is not None and dtype not in ("float32", "float64", *AUTOCAST):
            raise ValueError(f"dtype must be float32, float64, bfloat16, float16 or None, "
                             f"got {dtype!r}")
        # the global generators the port's initialisers draw from: the CPU's, and the GPU's
        # where the adapter runs there (a port may create its weights on the device);
        # torch.manual_seed would also seed every other backend, 0.8 ms a build on the CPU
        torch.default_generator.manual_seed(seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed_all(seed)
        param = None if dtype is None else getattr(torch, _float32(dtype))
        module = self.construct(layer, self.port_config(layer, config),
                                input_shapes=input_shapes, dtype=param)
        self._materialise(module, input_shapes)
        module = module.to(self.device) if param is None else module.to(self.device, param)
        return self._handle(layer, module, config, input_shapes, dtype, seed=seed)

    def _materialise(self, module, input_shapes) -> None:
        """A module with lazy parameters (``nn.LazyLinear``: shapes inferred at the first
        call) is called once on zeros of ``input_shapes`` in inference mode, as a Keras layer
        is built from its input shapes, so that its weights exist to be set, read and saved
        (PyTorch's "dry run", torch.nn.modules.lazy). Where that call raises, the module is
        left as it is: the clauses say what fails."""
        torch = self.torch
        lazy = torch.nn.parameter.UninitializedParameter
        if not any(isinstance(p, lazy) for p in module.parameters()):
            return
        inputs = [torch.zeros(tuple(s)) for s in input_shapes]
        was = module.training
        try:
            module.eval()
            with torch.no_grad():
                self.call(module, inputs if len(inputs) > 1 else inputs[0], training=False)
        except Exception:  # noqa: BLE001 - refused here, refused in the clauses
            pass
        finally:
            module.train(was)

    def load_native(self, layer, path):
        meta = load_meta(path, layer)
        handle = self.build(layer, meta["config"], input_shapes=meta["input_shapes"],
                            seed=meta["seed"], dtype=meta["dtype"])
        tensors = {k: self.torch.from_numpy(v) for k, v in meta["arrays"].items()}
        handle.obj.load_state_dict(tensors, strict=True)
        return handle

    def describe(self):
        torch = self.torch
        if self.device.type == "cuda":
            where = f"CUDA {torch.version.cuda} on {torch.cuda.get_device_name(self.device)}"
        else:
            where = f"CPU, {torch.get_num_threads()} threads"
        return f"{self.name} (torch {torch.__version__}, {where})"


# Inductor on the CPU vectorises for the widest instruction set that the CPU's flags list and
# the C++ compiler can build. To learn the second, each new process compiles and loads a probe
# program per instruction set (AMX, AVX-512 VNNI, AVX-512, AVX2; 9.0 s from a cold cache on this
# project's 2-core AVX-512 machine), and where the flags list them, one more per extension the
# chosen set may use (AVX-512 BF16, VNNI, AMX tiles, AMX FP16; 1.9 s of a cold `portspec
# verify`, 0.2 s of a warm one). portspec takes the CPU's flags as the answer to both
# (Inductor's ``cpp.vec_isa_ok``, the setting of TORCHINDUCTOR_VEC_ISA_OK=1, and ``check_build``
# answering yes for the extensions, which Inductor asks only where ``torch.cpu`` lists them), so
# Inductor picks what its probes would pass, and lets the kernels themselves test the compiler:
# a compiled call whose C++ fails to build is made again once with the probes
# (``_probe_vector_isa``). A user's TORCHINDUCTOR_VEC_ISA_OK wins.
_ISA = {"assumed": None}


def inductor_run(torch, make, run):
    """``run(make(False))`` with the instruction set assumed (above); where the C++ compiler
    refuses the kernels, ``run(make(True))`` once more with Inductor's probe. ``make(fresh)``
    returns the compiled function, a new one when ``fresh``."""
    assumed = _assume_vector_isa(torch)
    try:
        return run(make(False))
    except Exception as exc:
        if not (assumed and _cpp_build_failed(exc)):
            raise
    _probe_vector_isa(torch)
    return run(make(True))


def _assume_vector_isa(torch) -> bool:
    """Set Inductor's ``cpp.vec_isa_ok`` once per process (above); whether it is assumed."""
    if _ISA["assumed"] is None:
        _ISA["assumed"] = "TORCHINDUCTOR_VEC_ISA_OK" not in os.environ
        if _ISA["assumed"]:
            import torch._inductor.config as inductor
            from torch._inductor import cpu_vec_isa

            inductor.cpp.vec_isa_ok = True
            for isa in cpu_vec_isa.supported_vec_isa_list:
                isa.check_build = _listed  # an instance attribute: the class's probe is kept
    return _ISA["assumed"]


def _listed(code: str) -> bool:
    """``VecISA.check_build`` while the flags are the answer: Inductor asks about an extension
    only where ``torch.cpu`` lists it (above)."""
    return True


def _probe_vector_isa(torch) -> None:
    import torch._inductor.config as inductor
    from torch._inductor import cpu_vec_isa

    _ISA["assumed"] = False
    inductor.cpp.vec_isa_ok = None
    for isa in cpu_vec_isa.supported_vec_isa_list:
        vars(isa).pop("check_build", None)
        for cls in type(isa).__mro__:  # the answers cached while assumed
            for method in vars(cls).values():
                if callable(getattr(method, "cache_clear", None)):
                    method.cache_clear()
    cpu_vec_isa.valid_vec_isa_list.cache_clear()
    torch._dynamo.reset()


def _cpp_build_failed(exc: BaseException) -> bool:
    """Does the chain of ``exc`` hold Inductor's CppCompileError (dynamo wraps it)?"""
    from torch._inductor.exc import CppCompileError

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, CppCompileError):
            return True
        exc = getattr(exc, "inner_exception", None) or exc.__cause__ or exc.__context__
    return False


def _float32(dtype: str) -> str:
    return "float32" if dtype in AUTOCAST else dtype


@functools.cache
def _module_internals(nn) -> frozenset:
    """The attributes every ``nn.Module`` has (``_modules``, ``_parameters``, hooks...)."""
    return frozenset(vars(nn.Module()))


class TorchPortHandle(PortHandle):
    def __init__(self, *args, seed=0):
        super().__init__(*args)
        self.seed = seed
        self._rng = self.adapter.torch.Generator().manual_seed(seed)
        self._compiled = {}

    def _tensors(self):
        obj = self.obj
        registered = {**dict(obj.named_parameters(remove_duplicate=False)),
                      **dict(obj.named_buffers(remove_duplicate=False))}
        held = {id(t) for t in registered.values()}
        # a state_dict key that is no registered path of a registered tensor: the module
        # renames it on save (a _save_to_state_dict override); the tensor is listed under its
        # registered path, once (FM-SAVE-NATIVE judges the save that renames it)
        tensors = {path: t for path, t in obj.state_dict(keep_vars=True).items()
                   if path in registered or id(t) not in held}
        # buffers registered with persistent=False: the layer computes with them, but
        # state_dict() leaves them out, so a saved layer loses them (FM-SAVE-NATIVE says so)
        for path, tensor in registered.items():
            tensors.setdefault(path, tensor)
        for path, tensor in self._plain().items():
            tensors.setdefault(path, tensor)
        return tensors

    def _plain(self) -> dict:
        """Floating tensors the port computes with that PyTorch does not register: those its
        modules keep as plain attributes (``self.running_mean = torch.zeros(n)``), and the
        parameters and buffers of modules kept in a plain list, tuple or dict (``self.mlp =
        [nn.Linear(...), ...]``, where ``nn.ModuleList`` was meant), by the path a
        ``ModuleList``/``ModuleDict`` would give them. The map may name them, but
        ``state_dict()`` and ``parameters()`` leave them out and ``Module.to()`` neither moves
        nor casts them."""
        torch = self.adapter.torch
        found = {}
        for prefix, module in self.obj.named_modules():
            for name, value in vars(module).items():
                path = f"{prefix}.{name}" if prefix else name
                if (isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter)
                        and value.is_floating_point()):
                    found[path] = value
            for path, sub in self._unregistered(prefix, module).items():
                for name, value in sub.state_dict(keep_vars=True).items():
                    if value.is_floating_point():
                        found[f"{path}.{name}"] = value
        return found

    def _unregistered(self, prefix, module) -> dict:
        """The modules ``module`` keeps in plain lists, tuples or dicts and nowhere the
        module registers them (a list of its registered submodules, kept to iterate over, is
        not one): path -> module."""
        nn = self.adapter.torch.nn
        internal = _module_internals(nn)
        registered = {id(m) for m in self.obj.modules()}
        out = {}
        for name, value in vars(module).items():
            if name in internal:
                continue
            items = (value.items() if isinstance(value, dict) else enumerate(value)
                     if isinstance(value, (list, tuple)) else ())
            for key, item in items:
                if isinstance(item, nn.Module) and id(item) not in registered:
                    out[f"{prefix}.{name}.{key}" if prefix else f"{name}.{key}"] = item
        return out

    def unregistered_containers(self) -> list[str]:
        """The plain lists, tuples and dicts of modules the port keeps (``_unregistered``)."""
        return sorted({path.rsplit(".", 1)[0] for prefix, module in self.obj.named_modules()
                       for path in self._unregistered(prefix, module)})

    def unsaved(self) -> str | None:
        """The layer's tensors that ``state_dict()``, and so a native save, leaves out."""
        saved = self.obj.state_dict()
        said = []
        left = [path for path, _ in self.obj.named_buffers() if path not in saved]
        if left:
            said.append(f"the port's {', '.join(left)} are buffers registered with "
                        "persistent=False, which state_dict() leaves out")
        plain = self.plain_words()
        if plain:
            said.append(plain)
        return "; ".join(said) or None

    def plain_paths(self) -> list[str]:
        """The paths of the floating tensors PyTorch does not register (``_plain``)."""
        return sorted(self._plain())

    def plain_words(self) -> str | None:
        """``diagnose.plain_state``'s words for the unregistered tensors, or None."""
        from portspec.diagnose import plain_state

        paths = self.plain_paths()
        return plain_state(paths, self.unregistered_containers(),
                           self.plain_weights(trainable=True)) if paths else None

    def plain_weights(self, trainable: bool | None = None) -> list[str]:
        """The port's paths of the unregistered tensors (``_plain``) that hold a weight of the
        spec's table, every piece of it (with ``trainable``, only those of weights the spec
        trains, or does not)."""
        plain = set(self._plain())
        table = {} if trainable is None else {
            w.name: w.trainable for w in self.spec.weight_table(self.config, self.input_shapes)}
        return sorted(p for name, entry in self.held.items()
                      if trainable is None or table.get(name) == trainable
                      for p, _ in entry.pieces if p in plain)

    def _native(self):
        params = {id(p) for p in self.obj.parameters() if p.requires_grad}
        return {
            path: (tuple(t.shape), id(t) in params)
            for path, t in self._tensors().items()
            if t.is_floating_point()
        }

    def _read(self):
        return {path: self._numpy(t) for path, t in self._tensors().items()}

    def _write_all(self, staged):
        tensors = self._tensors()  # one state_dict for every write
        with self.adapter.torch.no_grad():
            for path, value in staged:
                target = tensors[path]
                target.copy_(self._tensor(value).to(target.dtype))

    def _tensor(self, x):
        """NumPy -> torch on the adapter's device, a copy (the caller's array may be read-only
        or change later); dtypes as they are, so the port's own checks see them."""
        torch = self.adapter.torch
        if isinstance(x, (list, tuple)):
            return [self._tensor(v) for v in x]
        x = np.asarray(x)
        if x.dtype.name == "bfloat16":  # torch cannot read ml_dtypes arrays
            return torch.from_numpy(x.astype(np.float32)).to(self.adapter.device, torch.bfloat16)
        return torch.from_numpy(np.array(x, order="C")).to(self.adapter.device)

    def _numpy(self, t):
        if isinstance(t, (list, tuple)):
            return [self._numpy(v) for v in t]
        t = t.detach().cpu()
        if t.dtype == self.adapter.torch.bfloat16:  # NumPy has no bfloat16 of its own
            import ml_dtypes

            return t.float().numpy().astype(ml_dtypes.bfloat16)
        return t.numpy().copy()

    def _run(self, module, x, training):
        torch, device = self.adapter.torch, self.adapter.device
        self.obj.train(training)
        seed = int(torch.randint(0, 2**62, (), generator=self._rng))
        precision = (torch.autocast(device.type, dtype=getattr(torch, self.dtype))
                     if self.dtype in AUTOCAST else contextlib.nullcontext())
        with torch.random.fork_rng(devices=[device.index] if device.type == "cuda" else []):
            # only the generator the call draws from: torch.manual_seed seeds every backend
            # and costs more than a small layer's whole forward
            (torch.cuda if device.type == "cuda" else torch.default_generator).manual_seed(seed)
            with precision:
                return one_output(self.adapter.call(module, x, training=training))

    def forward(self, inputs, *, training):
        with self.adapter.torch.no_grad():
            return self._numpy(self._run(self.obj, self._tensor(inputs), training))

    def changes_input(self, inputs, *, training) -> str | None:
        """Whether a call changes its input tensor in place (``x.sub_(mean)``, ``x -= ...`` on
        the input or a view of it): the caller's tensor, compared after the call with its
        copy from before, bit for bit (NaN equal to NaN). None where it does not; "output"
        where the caller's tensor then holds the call's output (the residual sum written into
        the input, ``res = x; res += y``), else "changed"."""
        torch = self.adapter.torch
        x = self._tensor(inputs)
        given = x if isinstance(x, list) else [x]
        before = [t.clone() for t in given]
        with torch.no_grad():
            out = self._run(self.obj, x, training)

        def same(a, b):
            return a.shape == b.shape and (torch.equal(a, b) or bool(
                torch.all((a == b) | (a.isnan() & b.isnan()))))

        if all(same(a, b) for a, b in zip(given, before, strict=True)):
            return None
        out = one_output(out)
        return "output" if isinstance(out, torch.Tensor) and len(given) == 1 and same(
            given[0], out) else "changed"

    def forward_recorded(self, inputs, *, training):
        """``forward`` with autograd recording (``torch.enable_grad``), as a training loop
        calls the layer: the value calls run under ``torch.no_grad``, and a port whose
        computation reads the grad mode (``torch.is_grad_enabled()``) differs between the two
        (the root causes' ``GRAD_MODE`` record, FM/GFF-GRAD)."""
        with self.adapter.torch.enable_grad():
            return self._numpy(self._run(self.obj, self._tensor(inputs), training))

    def promotion(self, inputs, *, training) -> str | None:
        """Where a mixed-precision (autocast) call's result comes out float32: the first
        operation that meets a low-precision operand with one of the port's float32 weights
        and returns float32, as words (the operation, its operands' dtypes, the weight's
        path); None where no operation does, or the layer is not run under autocast.
        Autocast casts the operands of its listed operations (``linear``, ``matmul``), not
        those of an addition or a product, where type promotion keeps float32 (PyTorch's
        autocast documentation, "Ops that can autocast")."""
        if self.dtype not in AUTOCAST:
            return None
        torch = self.adapter.torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves

        low = getattr(torch, self.dtype)
        held = {t.untyped_storage().data_ptr(): path for path, t in self._tensors().items()
                if t.dtype == torch.float32}
        found = []

        class Watch(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
                if (not found and isinstance(out, torch.Tensor) and out.dtype == torch.float32
                        and any(t.dtype == low for t in tensors)):
                    paths = [held.get(t.untyped_storage().data_ptr()) for t in tensors
                             if t.dtype == torch.float32]
                    if any(paths):
                        found.append((func, [t.dtype for t in tensors], paths))
                return out

        with torch.no_grad(), Watch():
            self._run(self.obj, self._tensor(inputs), training)
        if not found:  # no weight applied by hand: where a low-precision value turns float32
            from portspec.ports.narrowing import in_torch

            with torch.no_grad():
                where = in_torch(torch, lambda: self._run(self.obj, self._tensor(inputs),
                                                          training),
                                 self.port_files(), origin=self.dtype, targets=("float32",))
            return where and (f"under autocast the output comes out float32: {where}, and "
                              f"nothing casts it back to {self.dtype} (a part computed outside "
                              f"autocast, torch.autocast(enabled=False), or cast to its "
                              f"weights' dtype), where the spec computes in {self.dtype}")
        func, dtypes, paths = found[0]
        name = str(func.overloadpacket.__name__) if hasattr(func, "overloadpacket") else str(func)
        operands = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        weight = " and ".join(p for p in paths if p)
        return (f"under autocast the port's float32 weight {weight} meets a {self.dtype} value "
                f"in {name}({operands}), an operation autocast does not cast, so the result is "
                f"promoted to float32 and so is the output: the weight is applied by hand "
                f"outside autocast's cast operations (linear, matmul), where the spec computes "
                f"in {self.dtype}")

    def stuck_in_training(self) -> list[str]:
        """The outermost submodules (``named_modules`` paths) still in training mode after the
        layer's ``train(False)``, which ``Module.eval()`` calls: a ``train()`` override that
        sets ``self.training`` and does not pass the mode on (``super().train(mode)``) leaves
        them there. Empty where the layer itself stays in training mode too."""
        self.obj.train(False)
        if self.obj.training:
            return []
        stuck = [name for name, m in self.obj.named_modules() if name and m.training]
        return [n for n in stuck if not any(n.startswith(f"{o}.") for o in stuck)]  # outermost

    def tracked_state(self) -> dict[str, bool]:
        """The port's tensors outside its parameters (moving statistics) that hold autograd
        history after a training gradient call (FM-BN-UPDATE): path -> whether it is a node
        of the call's graph (a ``grad_fn``), not only a tensor that requires grad. Only
        PyTorch handles have this: JAX's and Keras's state is values, not graph nodes, so the
        clause makes no gradient call for them."""
        nn = self.adapter.torch.nn
        return {path: t.grad_fn is not None for path, t in sorted(self._tensors().items())
                if not isinstance(t, nn.Parameter) and (t.requires_grad or t.grad_fn is not None)}

    def narrowing(self, inputs, *, training):
        """Where a float64 call turns a value narrower, or a float32 call turns one float16
        or bfloat16 (an autocast region inside the layer: ``torch.autocast`` on the CPU
        computes its listed operations in bfloat16), as words; None elsewhere."""
        if self.dtype not in ("float64", "float32"):
            return None
        from portspec.ports.narrowing import in_torch

        torch, x = self.adapter.torch, self._tensor(inputs)
        low = {} if self.dtype == "float64" else {"origin": "float32",
                                                  "targets": ("float16", "bfloat16")}
        with torch.no_grad():
            return in_torch(torch, lambda: self._run(self.obj, x, training), self.port_files(),
                            **low)

    def forward_compiled(self, inputs, *, training):
        torch = self.adapter.torch

        def make(fresh):
            if fresh or training not in self._compiled:
                self._compiled[training] = torch.compile(self.obj, dynamic=False)
            return self._compiled[training]

        def run(compiled):
            with torch.no_grad():
                return self._numpy(self._run(compiled, self._tensor(inputs), training))

        return inductor_run(torch, make, run)

    def _native_grad(self, inputs, cotangent, training, paths):
        torch = self.adapter.torch
        x = self._tensor(inputs)
        xs = x if isinstance(x, list) else [x]
        for t in xs:
            t.requires_grad_(t.is_floating_point())
        tensors = self._tensors()
        out = self._run(self.obj, x, training)
        cot = self._tensor(np.asarray(cotangent, dtype=np.float64)).to(out.dtype)
        grads = torch.autograd.grad(
            (out * cot).sum(),
            [*xs, *(tensors[p] for p in paths)],
            allow_unused=True,
            materialize_grads=True,  # a weight the output does not reach has gradient 0
        )
        gx = [self._numpy(g) for g in grads[: len(xs)]]
        weights = {p: self._numpy(g) for p, g in zip(paths, grads[len(xs) :], strict=True)}
        return (gx if isinstance(x, list) else gx[0]), weights

    def param_counts(self):
        # torch's own split: parameters that require grad, the rest plus every buffer
        params = list(self.obj.parameters())
        trainable = sum(p.numel() for p in params if p.requires_grad)
        frozen = sum(p.numel() for p in params if not p.requires_grad)
        return trainable, frozen + sum(b.numel() for b in self.obj.buffers())

    def save_native(self, directory):
        # the module's own state_dict, as safetensors: never a pickle
        state = {k: v.detach().cpu().numpy() for k, v in self.obj.state_dict().items()}
        path = os.path.join(directory, f"{self.layer}.safetensors")
        return save_arrays(path, state, {**self._meta(), "seed": str(self.seed)})


TorchPortAdapter.handle_class = TorchPortHandle
