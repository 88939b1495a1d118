"""The portspec adapter for the PyTorch layers: NumPy in, NumPy out, canonical weight names.

``TorchAdapter()`` runs on the CPU (``--impl torch``); ``TorchAdapter(variant="cuda")`` on the
current CUDA device (``--impl torch-cuda``), and raises ``RuntimeError`` where there is none.
bfloat16 and float16 are mixed precision (float32 parameters, ``torch.autocast`` compute). The
native format is the module's ``state_dict`` (torch's names and layouts) as safetensors, with
the config in the file's metadata; nothing is pickled.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping

import ml_dtypes
import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import nn

from portspec.adapter import Adapter, Handle
from portspec.impls.torch.layers import FeatureMixing, GatedFeatureFusion

_TORCH_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_LOW_PRECISION = ("bfloat16", "float16")

# Canonical name -> (torch state_dict name, transposed). Keras Dense kernels are (in, out);
# nn.Linear.weight is (out, in).
_NAMES = {
    "FeatureMixing": {
        "norm.gamma": ("norm.weight", False),
        "norm.beta": ("norm.bias", False),
        "norm.moving_mean": ("norm.running_mean", False),
        "norm.moving_variance": ("norm.running_var", False),
        "dense1.kernel": ("dense1.weight", True),
        "dense1.bias": ("dense1.bias", False),
        "dense2.kernel": ("dense2.weight", True),
        "dense2.bias": ("dense2.bias", False),
    },
    "GatedFeatureFusion": {
        "gate.kernel": ("gate.weight", True),
        "gate.bias": ("gate.bias", False),
    },
}


def _make(layer: str, config: dict, features: int | None, device, dtype) -> nn.Module:
    if layer == "FeatureMixing":
        return FeatureMixing(**config, device=device, dtype=dtype)
    if layer == "GatedFeatureFusion":
        return GatedFeatureFusion(features, **config, device=device, dtype=dtype)
    raise ValueError(f"layer must be one of {sorted(_NAMES)}, got {layer!r}")


def _param_dtype(dtype: str | None) -> torch.dtype | None:
    """None: torch's default dtype (float32 unless the user changed it); half precision keeps
    float32 parameters and computes under autocast."""
    if dtype is None:
        return None
    return torch.float32 if dtype in _LOW_PRECISION else _TORCH_DTYPES[dtype]


def _config(layer: str, module: nn.Module) -> dict:
    if layer == "FeatureMixing":
        return {"n_series": module.n_series, "input_size": module.input_size,
                "dropout": module.dropout, "ff_dim": module.ff_dim}
    return {"activation": module.activation}


class TorchHandle(Handle):
    """A built module plus what the suite's calls need: dtype policy, RNG, compiled copies.

    ``dtype`` is the suite's compute dtype. float32 and float64 modules run as they are; for
    bfloat16 and float16 the parameters and statistics stay float32 and calls run under
    ``torch.autocast`` (PyTorch's mixed precision, the counterpart of Keras's mixed_bfloat16
    and mixed_float16 policies).
    """

    def __init__(self, layer: str, module: nn.Module, seed: int, dtype: str | None):
        self.layer = layer
        self.module = module
        self.names = _NAMES[layer]
        self.dtype = dtype
        param = next(module.parameters())
        self.device = param.device
        self.autocast = _TORCH_DTYPES[dtype] if dtype in _LOW_PRECISION else None
        self.compute_dtype = self.autocast or param.dtype
        # The handle's own generator seeds each call's dropout, so that two handles built with
        # the same seed draw the same masks whatever else uses torch's global RNG meanwhile.
        self._rng = torch.Generator().manual_seed(seed)
        self._compiled: dict[bool, nn.Module] = {}

    # -- conversion ----------------------------------------------------------------------
    def _tensor(self, array, dtype: torch.dtype) -> torch.Tensor:
        """NumPy -> torch on the handle's device; floating arrays cast to ``dtype``, any other
        dtype left alone so that the layer's own check rejects it."""
        array = np.asarray(array)
        if array.dtype == ml_dtypes.bfloat16:  # torch cannot read ml_dtypes arrays directly
            t = torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
        else:
            # A copy: the caller's array may be read-only (safetensors) or change later.
            t = torch.from_numpy(np.array(array, order="C", copy=True))
        if t.is_floating_point():
            t = t.to(dtype)
        return t.to(self.device)

    def _inputs(self, inputs, requires_grad=False):
        def one(v):
            t = self._tensor(v, self.compute_dtype)
            return t.requires_grad_() if requires_grad and t.is_floating_point() else t
        if isinstance(inputs, (list, tuple)):
            return [one(v) for v in inputs]
        return one(inputs)

    @staticmethod
    def _to_numpy(t: torch.Tensor) -> np.ndarray:
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:
            return t.float().numpy().astype(ml_dtypes.bfloat16)
        return t.numpy().copy()

    def _call(self, module, x, training: bool):
        self.module.train(training)
        seed = int(torch.randint(0, 2**62, (), generator=self._rng))
        devices = [self.device.index] if self.device.type == "cuda" else []
        precision = (torch.autocast(self.device.type, dtype=self.autocast)
                     if self.autocast is not None else contextlib.nullcontext())
        with torch.random.fork_rng(devices=devices), precision:
            # Only the generator the call draws from: torch.manual_seed seeds every backend
            # and costs more than a small layer's whole forward.
            if self.device.type == "cuda":
                torch.cuda.manual_seed(seed)
            else:
                torch.default_generator.manual_seed(seed)
            return module(x)

    # -- calls ---------------------------------------------------------------------------
    def forward(self, inputs, *, training: bool):
        x = self._inputs(inputs)
        with torch.no_grad():
            return self._to_numpy(self._call(self.module, x, training))

    def forward_compiled(self, inputs, *, training: bool):
        compiled = self._compiled.get(training)
        if compiled is None:
            compiled = self._compiled[training] = torch.compile(self.module, dynamic=False)
        x = self._inputs(inputs)
        with torch.no_grad():
            return self._to_numpy(self._call(compiled, x, training))

    def grad(self, inputs, cotangent, *, training: bool):
        x = self._inputs(inputs, requires_grad=True)
        params = dict(self.module.named_parameters())
        trainable = {c: t for c, (t, _) in self.names.items()
                     if t in params and params[t].requires_grad}
        xs = x if isinstance(x, list) else [x]
        out = self._call(self.module, x, training)
        cot = self._tensor(cotangent, out.dtype)
        grads = torch.autograd.grad(
            (out * cot).sum(), [*xs, *(params[t] for t in trainable.values())],
            allow_unused=True, materialize_grads=True,
        )
        input_grads = [self._to_numpy(g) for g in grads[:len(xs)]]
        weight_grads = {}
        for canonical, g in zip(trainable, grads[len(xs):], strict=True):
            weight_grads[canonical] = self._to_numpy(g.T if self.names[canonical][1] else g)
        return (input_grads if isinstance(x, list) else input_grads[0]), weight_grads

    # -- weights -------------------------------------------------------------------------
    def _tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.module.state_dict(keep_vars=True))

    def get_weights(self) -> dict[str, np.ndarray]:
        tensors = self._tensors()
        return {c: self._to_numpy(tensors[t].T if tr else tensors[t])
                for c, (t, tr) in self.names.items()}

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        tensors = self._tensors()
        staged = {}
        for canonical, value in weights.items():
            if canonical not in self.names:
                raise ValueError(
                    f"{self.layer} has no weight {canonical!r}; its weights are "
                    f"{sorted(self.names)}"
                )
            target, transposed = self.names[canonical]
            value = self._tensor(value, tensors[target].dtype)
            value = value.T if transposed else value
            expected = tensors[target].shape
            if value.shape != expected:
                shape = tuple(value.T.shape if transposed else value.shape)
                want = tuple(reversed(expected) if transposed else expected)
                raise ValueError(
                    f"{self.layer} weight {canonical!r} has shape {want}, got shape {shape}"
                )
            staged[target] = value
        with torch.no_grad():
            for target, value in staged.items():
                tensors[target].copy_(value)

    def weight_info(self) -> dict[str, tuple[tuple[int, ...], bool]]:
        params = dict(self.module.named_parameters())
        buffers = dict(self.module.named_buffers())
        info = {}
        for canonical, (target, transposed) in self.names.items():
            tensor = params.get(target, buffers.get(target))
            shape = tuple(tensor.shape)
            info[canonical] = (
                tuple(reversed(shape)) if transposed else shape,
                target in params and params[target].requires_grad,
            )
        return info

    def param_counts(self) -> tuple[int, int]:
        trainable = sum(p.numel() for p in self.module.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.module.parameters() if not p.requires_grad)
        frozen += sum(b.numel() for b in self.module.buffers())
        return trainable, frozen

    def get_config(self) -> dict:
        return _config(self.layer, self.module)

    # -- native format: torch's own state_dict as safetensors, the config in its metadata --
    def save_native(self, directory: str) -> str:
        path = os.path.join(directory, f"{self.layer}.safetensors")
        metadata = {
            "layer": self.layer,
            "config": json.dumps(self.get_config()),
            "features": json.dumps(getattr(self.module, "features", None)),
            "dtype": json.dumps(self.dtype),
            "seed": str(int(self._rng.initial_seed())),
        }
        state = {k: v.detach().contiguous() for k, v in self.module.state_dict().items()}
        safetensors.torch.save_file(state, path, metadata=metadata)
        return path


class TorchAdapter(Adapter):
    framework = "torch"
    layers = ("FeatureMixing", "GatedFeatureFusion")
    low_precision = ("bfloat16", "float16")

    def __init__(self, variant: str | None = None):
        if variant in (None, "", "cpu"):
            self.name, self.device = "torch", torch.device("cpu")
        elif variant == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError("CUDA is not available")
            self.name, self.device = "torch-cuda", torch.device("cuda")
        else:
            raise ValueError(f"variant must be 'cpu' or 'cuda', got {variant!r}")

    def build(self, layer: str, config: dict, *, input_shapes, seed: int,
              dtype: str | None = "float32") -> TorchHandle:
        if dtype is not None and dtype not in _TORCH_DTYPES:
            raise ValueError(
                f"dtype must be one of {list(_TORCH_DTYPES)} or None, got {dtype!r}")
        features = input_shapes[0][-1] if layer == "GatedFeatureFusion" else None
        torch.manual_seed(seed)
        module = _make(layer, dict(config), features, self.device, _param_dtype(dtype))
        return TorchHandle(layer, module, seed, dtype)

    def load_native(self, layer: str, path: str) -> TorchHandle:
        with safetensors.safe_open(path, framework="pt", device=str(self.device)) as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
        if metadata.get("layer") != layer:
            raise ValueError(f"{path} holds a {metadata.get('layer')!r}, not a {layer!r}")
        dtype = json.loads(metadata["dtype"])
        module = _make(layer, json.loads(metadata["config"]), json.loads(metadata["features"]),
                       self.device, _param_dtype(dtype))
        module.load_state_dict(state, strict=True)
        return TorchHandle(layer, module, int(metadata.get("seed", 0)), dtype)

    def describe(self) -> str:
        if self.device.type == "cuda":
            where = f"CUDA {torch.version.cuda} on {torch.cuda.get_device_name(self.device)}"
        else:
            where = f"CPU, {torch.get_num_threads()} threads"
        return f"torch {torch.__version__} ({where})"
