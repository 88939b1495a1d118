"""PyTorch ports that each make one mistake, for measuring the root-cause stage.

``Conforming`` follows the spec (config validation and call errors included). Each port below
changes one thing of it, written the way a port would (torch modules and functions, not the
spec's oracle). ``expected`` is what the root-cause stage must name: the variant choices that
reproduce the mistake (``portspec.variants``), or for a mistake outside the variant space a
pattern the staged probe's cause must match (``portspec.localise``). tests/test_rootcause.py
measures the stage on them; ``portspec verify`` runs each like any port.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from measure_layers import mistaken
from torch import nn

from portspec.layers import LAYERS
from portspec.ports import (
    TorchPortAdapter,
    absent,
    held_as,
    identity,
    part,
    reshape,
    transpose,
)

FM_SPEC, GFF_SPEC = LAYERS["FeatureMixing"], LAYERS["GatedFeatureFusion"]


class _StraightThroughReLU(torch.autograd.Function):
    """ReLU whose backward forgets the mask: the gradient passes where p < 0 too."""

    @staticmethod
    def forward(ctx, p):
        return p.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _SigmoidGradS(torch.autograd.Function):
    """A sigmoid whose backward multiplies by s, its factor (1 - s) left out."""

    @staticmethod
    def forward(ctx, z):
        s = torch.sigmoid(z)
        ctx.save_for_backward(s)
        return s

    @staticmethod
    def backward(ctx, grad):
        (s,) = ctx.saved_tensors
        return grad * s


class FM(nn.Module):
    """FeatureMixing to the spec; class attributes select one mistake."""

    norm = "feature"  # feature, channel, time, scalar, layer-LN, layer-N, layer-L, none
    position = "before"
    eps, eps_outside, keep = 1e-3, False, 0.01
    var_keep = None  # the moving variance's own share kept (None: keep's)
    batch_weight = None  # the batch statistic's weight in the update (None: 1 - keep)
    ddof = update_ddof = 0
    moving_in_training = batch_in_inference = False
    update = "training"
    flatten = "C"
    activation = staticmethod(F.relu)
    drop_scale, rate_as_keep, sites, in_inference, shared = "inverted", False, (1, 2), False, False
    mask_axis = None  # 0, 1, 2: one mask broadcast along batch, time or channels
    drop_path = False  # the second site drops a sample's whole branch
    mask_product = False  # x * mask / (1 - p) written out: NaN at rate 1
    mask_keeps = False  # torch.bernoulli(p) taken as the keep mask, scaled by 1/(1-p) still
    kept_batch = False  # inference after a training call: that call's batch statistics
    residual = "input"
    drop_after_residual = False  # the second dropout on x + dense2(...)
    float32_inside = bias1_ignored = relu_after_dense2 = mean_only = False
    residual_scale = 1.0
    update_std = flag_ignored = False  # the moving variance updated with the std; eval always
    affine = "both"  # "scale": no offset (beta absent), "offset": no scale (gamma absent)
    clip = None  # the standardised features clamped to [-clip, clip]
    norm_clip = None  # the normalisation's output clamped: "clip(BN(x), -5, 5)"
    batch_one_moving = False  # a training batch of one normalised as in inference
    # outside the variant space (named by the staged probe, portspec.localise)
    eps_outside_in_training = False  # sqrt(var) + eps in training, sqrt(var + eps) otherwise
    var_about_moving = False  # the training variance taken about the moving mean
    bias2_after_dropout = False  # dropout(h @ W2) + b2
    var_centre = None  # the training variance about "grand" (x.mean()) or "zero" (E[x^2])
    update_var_eps = False  # the moving variance averages var + eps
    update_var_with_mean = False  # the moving variance averages the batch mean (a slip)
    batch_one_frozen = False  # a training batch of one leaves the moving statistics unchanged
    eps_floor = False  # sqrt(max(var, eps)): epsilon a floor under the variance
    bias1_after_act = relu_before_dense1 = False  # act(z W1) + b1; act(relu(z) W1 + b1)
    branch_sign = 1.0  # -1: x - branch
    update_with_output = False  # the moving variance averages the standardised output's var
    # the standardised features put back on other cells: "T1" flattened row-major, unflattened
    # as (N, L) and transposed; "T2" flattened from x.transpose(1, 2), reshaped straight back
    unflatten = None
    persistent = True  # False: the moving statistics are left out of state_dict()
    plain_stats = False  # the moving statistics as plain tensor attributes, not buffers
    residual_projection = False  # proj(x) + branch: a Dense (N, N) on the residual path
    rezero = False  # x + alpha * branch, alpha a trainable scalar from 0 (ReZero)
    output_float32 = False  # the output cast with .float() at the end
    dropout_module = False  # self.dropout = nn.Dropout(rate): the config reads the module
    scale_offset = False  # (1 + gamma) z + beta, gamma starting at 1
    one_pass = False  # the batch variance as E[x^2] - E[x]^2
    std_squared = False  # the batch variance as sqrt(var) ** 2 (an infinite derivative at 0)
    block_input_dropout = False  # x = dropout(x) first: the skip path adds the dropped input
    relu_after_residual = False  # relu(x + branch)
    input_dropout = False  # a dropout on the first Dense's input (the normalised features)
    inplace_input = False  # x.sub_(mean).div_(...): the input standardised in place
    dense2_reads_pre = False  # dense2(h) where dense2(dropout(relu(h))) was meant
    update_first = False  # training normalises with the moving statistics it just updated
    update_tracked = False  # the update outside no_grad, rebound: the buffers join the graph
    numpy_stats = False  # torch.from_numpy(np.zeros(n)): float64 buffers in a float32 layer
    standardised_detached = False  # the standardisation computed under no_grad
    stat_detached = None  # "var": the batch variance held in backprop, the mean's term kept
    mean_of_all = False  # training's mean of every value, not each feature's
    stats_keepdims = False  # the moving statistics rebound at shape (1, L*N) by an update
    stats_swapped = False  # mean, var = torch.var_mean(...), which returns (var, mean)
    bias2_plain = False  # lin2.bias a plain tensor with requires_grad, not an nn.Parameter
    checkpointed = False  # normalisation under torch.utils.checkpoint: the backward re-runs it
    update_mixture = False  # the moving variance + m (1 - m) (batch mean - moving mean)^2
    until_trained = False  # batch statistics in inference until a training call has run
    by_elements = False  # the batch sums divided by x.numel() where x.size(0) was meant
    standardise, norm_output_unused = True, False  # gamma x + beta; the first Dense reads x
    affine_detached = False  # "gamma.data * z + beta.data" in training: no gradient reaches them
    mode_from_grad = False  # batch statistics "if torch.is_grad_enabled()", not self.training
    seeded = False  # the first training call copies the batch statistics into the moving ones
    cumulative = False  # momentum=None: the n-th training call keeps (n-1)/n of the old value
    momentum_buffer = False  # the momentum a registered buffer ("follows .to() and is saved")
    momentum_f32 = False  # keep = torch.tensor(momentum, dtype=torch.float32) in the update
    inference_mode = False  # the inference normalisation under torch.inference_mode()
    batch_kept = False  # the first call's shape kept ("as build() would") and reshaped to
    kernel_rand = False  # Glorot by hand as torch.rand(...) * limit: U(0, limit), not centred
    bias_default = False  # the biases left as nn.Linear drew them (zeros_ left out)
    eps_machine = False  # epsilon torch.finfo(x.dtype).eps: 2.2e-16 at float64
    cached_inv_std = False  # inference reads a buffer 1/sqrt(var + eps) only training updates
    zero_guard = False  # where(var > 0, rsqrt(var + eps), 0): a zero variance standardises to 0
    update_on_copy = False  # buffer.to(x.dtype).copy_(...): under autocast a copy takes it

    def __init__(self, n_series, input_size, dropout, ff_dim):
        super().__init__()
        self.n_series, self.input_size, self.dropout, self.ff_dim = (
            n_series, input_size, dropout, ff_dim)
        shape = {"feature": (input_size * n_series,), "channel": (n_series,),
                 "time": (input_size,), "scalar": (1,), "layer-LN": (input_size * n_series,),
                 "layer-N": (n_series,), "layer-L": (n_series,), "none": (1,)}[self.norm]
        self.gamma, self.beta = nn.Parameter(torch.ones(shape)), nn.Parameter(torch.zeros(shape))
        if self.affine != "both":  # the one the layer does without is not held either
            self.register_parameter("beta" if self.affine == "scale" else "gamma", None)
        if self.norm in ("feature", "channel", "time", "scalar"):
            make = ((lambda f: torch.from_numpy(f(shape))) if self.numpy_stats
                    else (lambda f: getattr(torch, f.__name__)(shape)))
            self.register_buffer("moving_mean", make(np.zeros), persistent=self.persistent)
            self.register_buffer("moving_var", make(np.ones), persistent=self.persistent)
        if self.momentum_buffer:
            self.register_buffer("momentum", torch.tensor(self.keep, dtype=torch.float32))
        if self.cached_inv_std:  # "rsqrt once, not every call"
            self.register_buffer("inv_std", torch.full(shape, (1 + self.eps) ** -0.5))
        if self.dropout_module:  # one module for both sites, under the config's name
            self.dropout = nn.Dropout(dropout)
        if self.rezero:  # "the block starts as the identity"
            self.alpha = nn.Parameter(torch.zeros(()))
        if self.residual_projection:  # kept from a block whose widths differ
            self.proj = nn.Linear(n_series, n_series)
        if self.plain_stats and hasattr(self, "moving_mean"):  # self.moving_mean = torch.zeros
            mean, var = self.moving_mean, self.moving_var
            del self.moving_mean, self.moving_var
            self.__dict__.update(moving_mean=mean, moving_var=var)
        self.lin1, self.lin2 = nn.Linear(n_series, ff_dim), nn.Linear(ff_dim, n_series)
        for lin in (self.lin1, self.lin2):
            nn.init.xavier_uniform_(lin.weight)
            if self.kernel_rand:
                with torch.no_grad():
                    limit = (6.0 / sum(lin.weight.shape)) ** 0.5
                    lin.weight.copy_(torch.rand(lin.weight.shape) * limit)
            if not self.bias_default:
                nn.init.zeros_(lin.bias)
        if self.bias2_plain:  # "self.b2 = torch.zeros(n, requires_grad=True)"
            del self.lin2.bias
            self.lin2.bias = torch.zeros(n_series, requires_grad=True)

    def _axes(self):
        return {"feature": (0,), "channel": (0, 1), "time": (0, 2), "scalar": (0, 1, 2),
                "layer-LN": (1, 2), "layer-N": (2,), "layer-L": (1,)}[self.norm]

    def _as_grid(self, v):
        length, n = self.input_size, self.n_series
        if v.numel() == length * n:
            return v.reshape(n, length).T if self.flatten == "F" else v.reshape(length, n)
        if self.norm == "time":
            return v.reshape(length, 1)
        return v.reshape(1, -1)

    def _store(self, g, like):
        if like.numel() == g.numel():
            return (g.T if self.flatten == "F" else g).reshape(like.shape)
        return g.reshape(like.shape)

    def normalise(self, v):
        if self.flatten == "batch":  # flat = x.reshape(L * N, -1).T, "(features, batch)"
            flat = self._normalise(v.reshape(self.input_size * self.n_series, -1).T
                                   .reshape(v.shape))
            return flat.reshape(v.shape[0], -1).T.reshape(v.shape)
        return self._normalise(v)

    def _normalise(self, v):
        if self.norm == "none":
            return v
        axes = self._axes()
        mean = v.mean(axes, keepdim=True)
        var = v.var(axes, keepdim=True, correction=self.ddof)
        if self.mean_of_all and self.training:  # x.mean() where x.mean(dim=0) was meant
            mean = v.mean().expand_as(mean)
        if self.stats_swapped and self.training:
            mean, var = torch.var_mean(v, axes, keepdim=True, correction=self.ddof)
        if self.by_elements and self.training:
            mean = v.sum(axes, keepdim=True) / v.numel()
            var = ((v - mean) ** 2).sum(axes, keepdim=True) / v.numel()
        if self.one_pass:  # "one pass over the data"
            var = (v * v).mean(axes, keepdim=True) - mean * mean
        if self.std_squared:  # torch's std masks its derivative at 0; a sqrt does not
            var = torch.sqrt(v.var(axes, keepdim=True, correction=0)) ** 2
        if self.var_about_moving and self.training:
            var = ((v - self._as_grid(self.moving_mean).clone()) ** 2).mean(axes, keepdim=True)
        if self.var_centre and self.training:
            centre = v.mean() if self.var_centre == "grand" else 0.0
            var = ((v - centre) ** 2).mean(axes, keepdim=True)
        if self.stat_detached == "var" and self.training:  # a backward without its term
            var = var.detach()
        if not self.norm.startswith("layer"):
            training = self.training and not (self.batch_one_moving and v.shape[0] == 1)
            training = torch.is_grad_enabled() if self.mode_from_grad else training
            use_batch = (not self.moving_in_training) if training else self.batch_in_inference
            if self.until_trained:  # "no running statistics yet": a plain flag, never saved
                use_batch = use_batch or not getattr(self, "_trained", False)
                self._trained = getattr(self, "_trained", False) or training
            moves = self.update == "always" or (self.update == "training" and training)
            moves = moves and not (self.batch_one_frozen and v.shape[0] == 1)  # "if b > 1:"
            if moves:
                with contextlib.nullcontext() if self.update_tracked else torch.no_grad():
                    stat_var = v.var(axes, keepdim=True, correction=self.update_ddof)
                    stat_var = var if self.stats_swapped or self.by_elements else stat_var
                    stat_var = stat_var.sqrt() if self.update_std else stat_var
                    if self.var_centre:
                        stat_var = var
                    stat_var = stat_var + self.eps if self.update_var_eps else stat_var
                    stat_var = mean if self.update_var_with_mean else stat_var
                    if self.update_with_output:  # a variable reused: the standardised values'
                        stat_var = ((v - mean) / torch.sqrt(var + self.eps)).var(
                            axes, keepdim=True, correction=0)
                    keep = self.momentum if self.momentum_buffer else self.keep
                    if self.momentum_f32:
                        keep = torch.tensor(self.keep, dtype=torch.float32)
                    if self.cumulative:  # torch's momentum=None: 1/n of the n-th batch
                        self._calls = getattr(self, "_calls", 0) + 1
                        keep = (self._calls - 1) / self._calls
                    bw = 1 - keep if self.batch_weight is None else self.batch_weight
                    m = keep * self._as_grid(self.moving_mean) + bw * mean[0]
                    kv = keep if self.var_keep is None else self.var_keep
                    bv = 1 - kv if self.batch_weight is None else self.batch_weight
                    s = kv * self._as_grid(self.moving_var) + bv * stat_var[0]
                    if self.update_mixture:  # the pooled variance of old and batch statistics
                        s = s + kv * bv * (mean[0] - self._as_grid(self.moving_mean)) ** 2
                    new_m, new_s = self._store(m, self.moving_mean), self._store(s, self.moving_var)
            if not use_batch:
                mean, var = self._as_grid(self.moving_mean), self._as_grid(self.moving_var)
                mean, var = mean.clone(), var.clone()
            if self.kept_batch and training:  # "the statistics of the last batch seen"
                self._kept = (mean.detach().clone(), var.detach().clone())
            elif self.kept_batch and getattr(self, "_kept", None) is not None:
                mean, var = self._kept
            if moves and self.update_tracked:  # rebound to what autograd recorded
                self.moving_mean, self.moving_var = new_m, new_s
            elif moves and self.stats_keepdims:  # "mean(0, keepdim=True)", stored as it is
                self.moving_mean, self.moving_var = new_m.reshape(1, -1), new_s.reshape(1, -1)
            elif moves and self.seeded and not getattr(self, "_seeded", False):
                with torch.no_grad():  # "no running statistics yet": the batch's as they are
                    self.moving_mean.copy_(self._store(mean[0], self.moving_mean))
                    self.moving_var.copy_(self._store(stat_var[0], self.moving_var))
                self._seeded = True
            elif moves and self.update_on_copy:  # "in the input's dtype"
                self.moving_mean.to(v.dtype).copy_(new_m)
                self.moving_var.to(v.dtype).copy_(new_s)
            elif moves:
                self.moving_mean.copy_(new_m)
                self.moving_var.copy_(new_s)
            if moves and self.cached_inv_std:
                self.inv_std.copy_(torch.rsqrt(self.moving_var + self.eps))
            if not use_batch and self.cached_inv_std:  # sqrt(var + eps) = 1 / inv_std
                var = self._as_grid(self.inv_std) ** -2 - self.eps
            if moves and self.update_first:  # training normalises with what it just stored
                mean = self._as_grid(self.moving_mean).clone()
                var = self._as_grid(self.moving_var).clone()
        if not self.standardise:  # only the scale and offset: gamma v + beta
            z = v
        elif self.mean_only:
            z = v - mean
        elif self.eps_floor:
            z = (v - mean) / torch.sqrt(var.clamp_min(self.eps))
        elif self.eps_outside or (self.eps_outside_in_training and self.training):
            z = (v - mean) / (var.sqrt() + self.eps)
        elif self.inplace_input:  # the input itself standardised: the residual reads it
            z = v.sub_(mean).div_(torch.sqrt(var + self.eps))
        elif self.inference_mode and not self.training:  # "no autograd needed in eval"
            with torch.inference_mode():
                z = (v - mean) / torch.sqrt(var + self.eps)
        else:
            eps = torch.finfo(v.dtype).eps if self.eps_machine else self.eps
            z = (v - mean) / torch.sqrt(var + eps)
            if self.zero_guard:  # "guard the division"
                z = (v - mean) * torch.where(var > 0, torch.rsqrt(var + eps),
                                             torch.zeros_like(var))
        if self.standardised_detached:  # "with torch.no_grad(): xhat = ..."
            z = z.detach()
        if self.clip is not None:  # "to guard outliers"
            z = z.clamp(-self.clip, self.clip)
        if self.unflatten == "T1":
            z = z.reshape(z.shape[0], self.n_series, self.input_size).transpose(1, 2)
        elif self.unflatten == "T2":
            z = z.transpose(1, 2).reshape(z.shape)
        if self.affine == "scale":  # Keras's center=False: no offset, beta not held
            return self._as_grid(self.gamma) * z
        if self.affine == "offset":  # scale=False
            return z + self._as_grid(self.beta)
        scale = 1 + self._as_grid(self.gamma) if self.scale_offset else self._as_grid(self.gamma)
        if self.affine_detached and self.training:
            return scale.data * z + self._as_grid(self.beta).data
        if self.affine_swapped_in_call:  # "beta, gamma = self.affine": the map is right
            return self._as_grid(self.beta) * z + scale
        if self.inplace_input == "affine":  # the whole normalisation on the input, in place
            return z.mul_(scale).add_(self._as_grid(self.beta))
        return scale * z + self._as_grid(self.beta)

    affine_swapped_in_call = False

    fixed_rate = None  # a rate written into the layer, whatever the config's dropout

    def _rate(self, site=None):
        """The rate a site drops with; rate_as_keep True at both sites, a site (1, 2) at it
        alone (nn.Dropout(1 - p) written at one site)."""
        if self.fixed_rate is not None:
            return self.fixed_rate
        rate = self.dropout.p if isinstance(self.dropout, nn.Module) else self.dropout
        rate = rate or self.zero_default  # "dropout or 0.1": a rate of 0 read as unset
        return 1 - rate if self.rate_as_keep is True or self.rate_as_keep == site else rate

    zero_default = 0.0

    def drop(self, v, site, mask):
        p = self._rate(site)
        if site not in self.sites or p == 0:
            return v
        if not (self.training or self.in_inference):  # classic dropout: * (1 - p) here
            classic = self.drop_scale == "classic" or (self.drop_scale == "twice" and site == 2)
            return v * (1 - p) if classic else v  # "twice": the branch scaled at test time
        kept = {"inverted": 1 - p, "none": 1.0, "rate": p, "classic": 1.0,
                "twice": 1 - p}[self.drop_scale]
        if self.mask_product:  # x * mask / keep_prob, no case for rate 1: 0 / 0 there
            return v * mask / kept
        if p == 1:
            return torch.zeros_like(v)
        return torch.where(mask, v / kept, torch.zeros_like(v))

    def _mask(self, shape, dtype, p, site=None):
        drawn = list(shape)
        if self.mask_axis is not None:  # drawn without the axis and broadcast along it
            drawn[self.mask_axis] = 1
        drawn = torch.rand(drawn, dtype=dtype)
        keeps = self.mask_keeps is True or (site is not None and self.mask_keeps == site)
        return (drawn < p if keeps else drawn >= p).expand(shape).clone()

    def branch(self, z):
        bias1 = 0 if self.bias1_ignored or self.bias1_after_act else self.lin1.bias
        z = F.relu(z) if self.relu_before_dense1 else z
        if self.input_dropout and self.training and self._rate() > 0:  # on dense1's input
            z = torch.where(self._mask(z.shape, z.dtype, self._rate()), z / (1 - self._rate()),
                            torch.zeros_like(z))
        pre = z @ self.lin1.weight.T + bias1
        h = self.activation(pre)
        h = h + self.lin1.bias if self.bias1_after_act else h
        p = self._rate(2)
        m1 = self._mask(h.shape, h.dtype, self._rate(1), 1)
        m2 = self._mask((*h.shape[:-1], self.n_series), h.dtype, p, 2)
        if self.drop_path:  # stochastic depth: one decision per sample at the second site
            m2 = (torch.rand((h.shape[0], 1, 1), dtype=h.dtype) >= p).expand_as(m2).clone()
        if self.shared:  # unit c of both sites: one decision
            k = min(self.ff_dim, self.n_series)
            m1[..., :k] = m2[..., :k]
        h = self.drop(h, 1, m1)
        if self.bias2_after_dropout:  # the bias outside the dropout
            return self.drop(h @ self.lin2.weight.T, 2, m2) + self.lin2.bias
        y = self.lin2(pre if self.dense2_reads_pre else h)  # a variable mixed up
        y = F.relu(y) if self.relu_after_dense2 else y
        self._m2 = m2
        return y if self.drop_after_residual else self.drop(y, 2, m2)

    def forward(self, x):
        FM_SPEC.check_call(
            {"input_size": self.input_size, "n_series": self.n_series},
            tuple(x.shape), str(x.dtype).removeprefix("torch."))
        if self.flag_ignored:  # the mode the adapter set never reaches the computation
            self.training = False
        if self.block_input_dropout and self.training and 0 < self._rate() < 1:
            p = self._rate()
            x = torch.where(self._mask(x.shape, x.dtype, p), x / (1 - p), torch.zeros_like(x))
        if self.position == "after":
            y = self.branch(x)
            return self.normalise(x + y)
        if self.checkpointed and self.training and torch.is_grad_enabled():
            z = torch.utils.checkpoint.checkpoint(self.normalise, x, use_reentrant=False)
        else:
            z = self.normalise(x)
        z = x if self.norm_output_unused else z  # dense1(x) where dense1(z) was meant
        z = z if self.norm_clip is None else z.clamp(-self.norm_clip, self.norm_clip)
        if self.float32_inside:  # a sublayer that rounds to float32 whatever it is given
            z = z.float().to(x.dtype)
        y = self.branch(z)
        y = self.branch_sign * y
        y = self.alpha * y if self.rezero else y
        x = self.proj(x) if self.residual_projection else x
        if self.residual == "into-input":  # "res = x; res += y": the caller's tensor
            out = x
            out += y
        else:
            out = {"input": self.residual_scale * x + y, "normalised": z + y, "none": y}[
                self.residual]
        out = F.relu(out) if self.relu_after_residual else out
        out = self.drop(out, 2, self._m2) if self.drop_after_residual else out
        if self.batch_kept:
            self._shape = getattr(self, "_shape", None) or tuple(x.shape)
            out = out.reshape(self._shape)
        return out.float() if self.output_float32 else out


class GFF(nn.Module):
    concat, roles, bias, fixed, axis, sees = "ab", "a-gated", True, None, -1, "both"
    tanh_rescaled = act_first = False
    width = None  # the gate's units: None, one per feature; 1, one gate broadcast
    gate_clip = None  # the gate clamped to [gate_clip, 1 - gate_clip]
    temperature = False  # the pre-activation divided by sqrt(F)
    log_softmax = halves_transposed = False  # log_softmax for softmax; each kernel half .T
    # outside the variant space (named by the staged probe, portspec.localise)
    bias_times = 1  # the gate's bias added this many times
    product_gate = False  # the gate sees concat([a * b, a - b])
    gate_dropout = 0.0  # a dropout on the gate in training
    pooled = False  # the gate computed from the inputs averaged over the middle axes
    outside_autocast = False  # computed in the weights' float32 outside autocast, not cast back
    act_twice = False  # the activation applied to the gate again
    naive_softmax = False  # exp(z) / sum(exp(z)), the max not subtracted
    global_max = False  # exp(z - z.max()) / sum over the row: the whole tensor's max
    formula_sigmoid = False  # 1 / (1 + exp(-z)) by hand
    tanh_sigmoid = False  # "sigmoid" as 0.5 * (1 + tanh(z)), which is sigmoid(2 z)
    custom_sigmoid = False  # a sigmoid whose backward leaves out (1 - s)
    ln_inputs = False  # the gate computed from LayerNorm(a), LayerNorm(b) (no affine)
    orthogonal = False  # the gate kernel drawn with nn.init.orthogonal_
    activation_gain = False  # xavier_uniform_ with gain calculate_gain(activation)
    forced_autocast = False  # the gate under torch.autocast(device_type): bfloat16 on the CPU

    def __init__(self, features, activation="sigmoid"):
        super().__init__()
        self.features, self.activation = features, activation
        self.gate = nn.Linear(2 * features, self.width or features)
        nn.init.xavier_uniform_(self.gate.weight)
        if self.orthogonal:
            nn.init.orthogonal_(self.gate.weight)
        if self.activation_gain:  # "the gain for the nonlinearity" (softmax has none in torch)
            gain = 1.0 if activation == "softmax" else nn.init.calculate_gain(activation)
            nn.init.xavier_uniform_(self.gate.weight, gain=gain)
        nn.init.zeros_(self.gate.bias)

    fallback = {}  # activation names a lookup misses, and what it falls back to
    relu_capped = False  # the relu gate clamped to [0, 1]

    def _act(self, z):
        name = self.fixed or self.fallback.get(self.activation, self.activation)
        if name == "softmax" and self.log_softmax:
            return torch.log_softmax(z, dim=-1)
        if name == "softmax" and self.naive_softmax:  # "the textbook formula"
            return torch.exp(z) / torch.exp(z).sum(-1, keepdim=True)
        if name == "sigmoid" and self.formula_sigmoid:  # its derivative: inf / inf past 709
            return 1 / (1 + torch.exp(-z))
        if name == "sigmoid" and self.tanh_sigmoid:  # "no exp to overflow"
            return 0.5 * (1 + torch.tanh(z))
        if name == "softmax" and self.global_max:  # stabilised, but by the tensor's max
            e = torch.exp(z - z.max())
            return e / e.sum(-1, keepdim=True)
        if name == "softmax":
            if self.axis == "all":  # by hand, no axis given: every element at once
                e = torch.exp(z - z.max())
                return e / e.sum()
            if self.axis == "implicit":  # F.softmax without dim (torch's legacy choice)
                return torch.softmax(z, dim=0 if z.dim() in (0, 1, 3) else 1)
            return torch.softmax(z, dim=self.axis)
        if name == "tanh" and self.tanh_rescaled:  # a "fix" into [0, 1]
            return (torch.tanh(z) + 1) / 2
        if name == "sigmoid" and self.custom_sigmoid:
            return _SigmoidGradS.apply(z)
        if name == "relu" and self.relu_capped:  # "a gate stays in [0, 1]"
            return torch.nn.functional.hardtanh(z, 0.0, 1.0)
        return {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[name](z)

    def forward(self, a, b):
        if self.outside_autocast and torch.is_autocast_enabled(a.device.type):
            with torch.autocast(a.device.type, enabled=False):  # "a stable gate"
                return self.forward(a.to(self.gate.weight.dtype), b.to(self.gate.weight.dtype))
        f = self.features
        w = self.gate.weight  # (F, 2F)
        if self.halves_transposed:  # each (F, F) half read (in, out)
            w = torch.cat([w[:, :f].T, w[:, f:].T], dim=1)
        first, second = (a, b) if self.concat == "ab" else (b, a)
        if self.ln_inputs:  # "normalise before gating"
            first, second = (F.layer_norm(v, v.shape[-1:]) for v in (first, second))
        if self.pooled and a.dim() > 2:  # "one gate per sequence"
            first, second = (v.mean(dim=tuple(range(1, v.dim() - 1)), keepdim=True)
                             for v in (first, second))
        if self.act_first:  # the activation on the concatenation, the Dense after it
            g = self.gate(self._act(torch.cat([first, second], -1)))
            return g * a + (1 - g) * b
        if self.forced_autocast and a.dtype == torch.float32:  # "faster gates"
            with torch.autocast(a.device.type):
                g = self._act(self.gate(torch.cat([first, second], -1))).to(a.dtype)
            return g * a + (1 - g) * b
        if self.product_gate:
            z = torch.cat([a * b, a - b], -1) @ w.T
        elif self.sees == "interleaved":  # a stack and flatten for a concat: a0, b0, a1, ...
            z = torch.stack([first, second], -1).flatten(-2) @ w.T
        elif self.sees == "both":
            z = torch.cat([first, second], -1) @ w.T
        elif self.sees in ("aa", "bb"):  # a typo: one input twice
            v = a if self.sees == "aa" else b
            z = torch.cat([v, v], -1) @ w.T
        else:
            z = (a @ w[:, :f].T) if self.sees == "a" else (b @ w[:, f:].T)
        z = z + self.bias_times * self.gate.bias if self.bias else z
        z = z / f**0.5 if self.temperature else z
        g = self._act(z)
        g = self._act(g) if self.act_twice else g
        g = F.dropout(g, self.gate_dropout, self.training) if self.gate_dropout else g
        if self.gate_clip is not None:  # "to keep both inputs alive"
            g = g.clamp(self.gate_clip, 1 - self.gate_clip)
        if self.roles == "both":
            return g * a + g * b
        if self.roles == "residual":
            return a + g * b
        if self.roles == "precedence":
            return g * a + 1 - g * b
        if self.roles == "logits":  # the complement of the pre-activation
            return g * a + (1 - z) * b
        if self.roles == "minus":  # the complement's sign flipped
            return g * a + (g - 1) * b
        if self.roles == "lerp-from-a":  # torch.lerp's form, from the wrong end
            return a + g * (a - b)
        if self.roles == "glu":  # a gated linear unit: the second term left out
            return g * a
        if self.roles == "complement-clamped":  # "keep both weights non-negative"
            return g * a + (1 - g).clamp_min(0) * b
        if self.roles == "complement-clipped":
            return g * a + (1 - g).clamp(0, 1) * b
        return g * b + (1 - g) * a if self.roles == "b-gated" else g * a + (1 - g) * b


def _norm_map(norm):
    names = {"norm.gamma": ("gamma", identity), "norm.beta": ("beta", identity)}
    if norm in ("feature", "channel", "time", "scalar"):
        names.update({"norm.moving_mean": ("moving_mean", identity),
                      "norm.moving_variance": ("moving_var", identity)})
    else:
        names.update({"norm.moving_mean": absent("no moving statistics"),
                      "norm.moving_variance": absent("no moving statistics")})
    if norm == "none":
        names.update({"norm.gamma": absent("no normalisation"),
                      "norm.beta": absent("no normalisation")})
    return names


def _weights(fm_class, kernel=transpose):
    dropped = {"scale": {"norm.beta": absent("center=False")},
               "offset": {"norm.gamma": absent("scale=False")}}.get(fm_class.affine, {})
    fm_map = {
        **_norm_map(fm_class.norm),
        **dropped,
        "dense1.kernel": ("lin1.weight", kernel),
        "dense1.bias": ("lin1.bias", identity),
        "dense2.kernel": ("lin2.weight", kernel),
        "dense2.bias": ("lin2.bias", identity),
    }
    if fm_class.norm in ("channel", "time", "scalar", "layer-N", "layer-L"):
        for k, path in (("norm.gamma", "gamma"), ("norm.beta", "beta"),
                        ("norm.moving_mean", "moving_mean"), ("norm.moving_variance",
                                                              "moving_var")):
            if not fm_class.norm.startswith("layer") or k in ("norm.gamma", "norm.beta"):
                fm_map[k] = held_as(path, why=f"{fm_class.norm} statistics")
    return {
        "FeatureMixing": fm_map,
        "GatedFeatureFusion": {"gate.kernel": ("gate.weight", kernel),
                               "gate.bias": ("gate.bias", identity)},
    }


class Conforming(TorchPortAdapter):
    name = "conforming"
    layers = ("FeatureMixing", "GatedFeatureFusion")
    fm, gff = FM, GFF
    expected: dict | None = {}
    weights = _weights(FM)

    def construct(self, layer, config, *, input_shapes, dtype):
        config = LAYERS[layer].validate_config(config)
        if layer == "FeatureMixing":
            return self.fm(**config)
        GFF_SPEC.check_call(config, [tuple(s) for s in input_shapes], ["float32"] * 2)
        return self.gff(input_shapes[0][-1], **config)

    def call(self, module, inputs, *, training):
        module_itself = getattr(module, "_orig_mod", module)  # torch.compile's wrapper
        if isinstance(module_itself, GFF):
            if not isinstance(inputs, (list, tuple)):
                raise TypeError("GatedFeatureFusion inputs must be a list of two tensors")
            GFF_SPEC.check_call({}, [tuple(t.shape) for t in inputs],
                                [str(t.dtype).removeprefix("torch.") for t in inputs],
                                features=module_itself.features)
        return super().call(module, inputs, training=training)


def _with_default_dropouts(self, *args, **kwargs):
    FM.__init__(self, *args, **kwargs)
    self.drop_a, self.drop_b = nn.Dropout(), nn.Dropout()  # the rate never passed: p = 0.5


def _default_dropouts_branch(self, z):
    return self.drop_b(self.lin2(self.drop_a(F.relu(self.lin1(z)))))


def _eps_as_tensor(self, *args, **kwargs):
    FM.__init__(self, *args, **kwargs)
    self.eps = torch.tensor(self.eps)  # "no Python float for torch.compile": float32


def _stats_half(self, *args, **kwargs):
    FM.__init__(self, *args, **kwargs)
    # "statistics in half precision to save memory": made float16, whatever the layer's dtype
    self.moving_mean, self.moving_var = self.moving_mean.half(), self.moving_var.half()


def _kept(self, x):
    out = FM.forward(self, x)
    self.last_output = out * 1  # kept for inspection, .detach() forgotten
    return out


def _input_kept(self, x):
    self.last_input = x  # the caller's tensor: no graph of the layer's
    return FM.forward(self, x)


def port(name, expected, fm=None, gff=None, kernel=transpose):
    """A port like Conforming with one mistake: FM / GFF class attributes, or the kernel map."""
    fm_class = type(f"FM_{name}", (FM,), fm or {})
    gff_class = type(f"GFF_{name}", (GFF,), gff or {})
    body = {"name": name, "expected": expected, "fm": fm_class, "gff": gff_class,
            "weights": _weights(fm_class, kernel),
            "layers": mistaken(fm, gff, kernel is not transpose)}
    return type(name.title().replace("-", ""), (Conforming,), body)


PORTS = [
    # normalisation
    port("bn-per-channel", {"norm": "batch-channel"}, fm={"norm": "channel"}),
    port("bn-per-time-step", {"norm": "batch-time"}, fm={"norm": "time"}),
    port("bn-one-scalar", {"norm": "batch-scalar"}, fm={"norm": "scalar"}),
    port("standardised-clipped", {"clip": 5.0}, fm={"clip": 5.0}),
    port("normalisation-output-clipped", {"norm_clip": 5.0}, fm={"norm_clip": 5.0}),
    port("batch-of-one-as-inference", {"batch_one": "moving"}, fm={"batch_one_moving": True}),
    port("layernorm-LN-after-residual", {"norm": "layer-LN", "position": "after"},
         fm={"norm": "layer-LN", "position": "after"}),
    port("layernorm-over-channels", {"norm": "layer-N"}, fm={"norm": "layer-N"}),
    port("instance-norm-over-time", {"norm": "layer-L"}, fm={"norm": "layer-L"}),
    port("post-norm", {"position": "after"}, fm={"position": "after"}),
    port("epsilon-1e-5", {"eps": 1e-5}, fm={"eps": 1e-5}),
    port("epsilon-outside-sqrt", {"eps_where": "outside"}, fm={"eps_outside": True}),
    port("epsilon-machine-of-the-dtype", {"eps": "machine"}, fm={"eps_machine": True}),
    port("momentum-torch-sense", {"momentum": 0.99}, fm={"keep": 0.99}),
    port("momentum-0.1", {"momentum": 0.1}, fm={"keep": 0.1}),
    # BatchNorm(features, momentum, eps) called as BatchNorm(features, eps, momentum)
    port("epsilon-and-momentum-exchanged", r"^FeatureMixing: epsilon 0\.01 instead of epsilon "
         r"0\.001, and moving statistics keep 0\.001 .* \(each the other's value: epsilon and "
         r"momentum passed in each other's place", fm={"eps": 0.01, "keep": 0.001}),
    port("momentum-flipped-for-the-variance", {"var_momentum": 0.99}, fm={"var_keep": 0.99}),
    port("unbiased-normalisation", {"var_ddof": 1}, fm={"ddof": 1}),
    port("unbiased-moving-update", {"update_ddof": 1}, fm={"update_ddof": 1}),
    port("moving-stats-in-training", {"train_stats": "moving"},
         fm={"moving_in_training": True}),
    port("batch-stats-in-inference", {"infer_stats": "batch"}, fm={"batch_in_inference": True}),
    port("moving-stats-never-updated", {"update": "never"}, fm={"update": "never"}),
    port("flatten-channel-major", {"flatten": "F"}, fm={"flatten": "F"}),
    port("moving-stats-keepdims", {"state_shape": "keepdims"}, fm={"stats_keepdims": True}),
    port("batch-mean-of-every-value", {"train_mean": "all"}, fm={"mean_of_all": True}),
    port("flatten-reads-the-batch", {"flatten": "batch"}, fm={"flatten": "batch"}),
    port("batch-mean-and-variance-swapped", {"batch_stats": "var-mean"},
         fm={"stats_swapped": True}),
    port("standardised-under-no-grad", r"^FeatureMixing: the standardised features are "
         r"treated as constants in backprop", fm={"standardised_detached": True}),
    port("moving-stats-from-numpy", r"^FeatureMixing: a FeatureMixing of this port built at "
         r"the default dtype holds norm.moving_mean, norm.moving_variance in float64 where its "
         r"other weights are float32", fm={"numpy_stats": True}),
    port("moving-stats-with-autograd-history", r"^FeatureMixing: the moving statistics are "
         r"updated outside torch.no_grad\(\)", fm={"update_tracked": True}),
    port("batchnorm-without-offset", {"affine": "scale"}, fm={"affine": "scale"}),
    port("batchnorm-without-scale", {"affine": "offset"}, fm={"affine": "offset"}),
    # the MLP
    port("gelu-activation", {"activation": "gelu"}, fm={"activation": staticmethod(F.gelu)}),
    port("silu-activation", {"activation": "silu"}, fm={"activation": staticmethod(F.silu)}),
    port("relu6-activation", {"activation": "relu6"}, fm={"activation": staticmethod(F.relu6)}),
    port("kernels-not-transposed", {"transpose": True}, kernel=identity),
    # the (in, out) values poured into Linear's (out, in) weight: a reshape for a transpose
    port("kernels-reshaped-not-transposed", {"transpose": "reshape"}, kernel=reshape()),
    # dropout
    port("dropout-not-inverted", {"dropout_scale": "none"}, fm={"drop_scale": "none"}),
    port("dropout-scaled-by-1-over-p", {"dropout_scale": "rate"}, fm={"drop_scale": "rate"}),
    port("dropout-classic", {"dropout_scale": "classic"}, fm={"drop_scale": "classic"}),
    port("dropout-inverted-and-scaled-at-test-time", {"dropout_scale": "twice"},
         fm={"drop_scale": "twice"}),
    port("dropout-rate-as-keep", {"dropout_rate": "keep"}, fm={"rate_as_keep": True}),
    port("dropout-mask-keeps-with-the-rate-at-the-second-site",
         {"dropout_rate": "keep-mask-dropout2"}, fm={"mask_keeps": 2}),
    port("dropout-0-read-as-unset", r"^FeatureMixing: the forward is random at dropout 0.0: "
         r"two calls with the same weights and input differ", fm={"zero_default": 0.1}),
    port("batch-variance-detached", r"^FeatureMixing: the batch variance is treated as a "
         r"constant in backprop, its mean's term kept", fm={"stat_detached": "var"}),
    # the output kept on the layer for inspection without .detach(): the step's graph stays
    port("output-kept-with-its-graph", r"^FeatureMixing: the call keeps last_output on the "
         r"layer as a tensor of the training step's autograd graph", fm={"forward": _kept}),
    # the input kept as it came (a leaf that requires grad, no graph): not a failure
    port("input-kept-as-it-came", {}, fm={"forward": _input_kept}),
    # gamma and beta used each where the other belongs in forward, the weight map right
    port("gamma-and-beta-exchanged-in-the-call",
         r"^FeatureMixing: gamma and beta exchanged in the layer's call \(each used where "
         r"the other belongs; the weight map is right: .* holds gamma 1 and beta 0",
         fm={"affine_swapped_in_call": True}),
    # nn.Dropout(1 - p) at one site: at dropout 0 that site drops every unit
    port("dropout-rate-as-keep-at-the-first-site", {"dropout_rate": "keep-dropout1"},
         fm={"rate_as_keep": 1}),
    port("dropout-rate-as-keep-at-the-second-site", {"dropout_rate": "keep-dropout2"},
         fm={"rate_as_keep": 2}),
    port("dropout-mask-keeps-with-the-rate", {"dropout_rate": "keep-mask"},
         fm={"mask_keeps": True}),
    port("inference-with-the-last-training-batch", r"^FeatureMixing: after a training call, "
         r"inference normalises with that call's batch statistics", fm={"kept_batch": True}),
    port("dropout-rate-hard-coded", {"dropout_rate": 0.2}, fm={"fixed_rate": 0.2}),
    # nn.Dropout() at its default p = 0.5: its draws at dropout 0 are no grad mode of the layer
    port("dropout-modules-without-their-rate", {"dropout_rate": 0.5},
         fm={"__init__": _with_default_dropouts, "branch": _default_dropouts_branch}),
    port("dropout-first-site-only", {"sites": ("dropout1",)}, fm={"sites": (1,)}),
    port("dropout-second-site-only", {"sites": ("dropout2",)}, fm={"sites": (2,)}),
    port("dropout-in-inference", {"dropout_inference": True}, fm={"in_inference": True}),
    port("dropout-shared-mask", {"shared_mask": True}, fm={"shared": True}),
    port("dropout-mask-over-batch", {"mask_axis": "batch"}, fm={"mask_axis": 0}),
    port("dropout-mask-over-channels", {"mask_axis": "channel"}, fm={"mask_axis": 2}),
    port("dropout-one-divides-by-zero", r"^FeatureMixing: at dropout 1.0 the kept units are "
         r"divided by the keep probability 1 - rate = 0", fm={"mask_product": True}),
    port("drop-path-second-site", r"^FeatureMixing: the second dropout draws one decision per "
         r"sample, broadcast over time and channels", fm={"drop_path": True}),
    # the residual
    port("no-residual", {"residual": "none"}, fm={"residual": "none"}),
    port("residual-twice", {"residual": "twice"}, fm={"residual_scale": 2.0}),
    port("residual-of-normalised", {"residual": "normalised"}, fm={"residual": "normalised"}),
    port("dropout-after-residual", {"residual_dropout": True}, fm={"drop_after_residual": True}),
    # the moving statistics
    port("moving-stats-updated-in-inference", {"update": "always"}, fm={"update": "always"}),
    port("moving-variance-updated-with-std", {"var_update": "std"}, fm={"update_std": True}),
    port("moving-variance-of-the-mixture", {"var_update": "mixture"},
         fm={"update_mixture": True}),
    port("training-flag-ignored", {"training_flag": "ignored"}, fm={"flag_ignored": True}),
    # precision
    port("float32-inside", {"precision": "float32"}, fm={"float32_inside": True}),
    # GatedFeatureFusion
    port("gff-concat-swapped", {"concat": "ba"}, gff={"concat": "ba"}),
    port("gff-gate-clamped", {"gate_clip": 0.01}, gff={"gate_clip": 0.01}),
    port("gff-gate-temperature", {"gate_scale": "1/sqrt(F)"}, gff={"temperature": True}),
    port("gff-log-softmax", {"softmax": "log"}, gff={"log_softmax": True}),
    port("gff-kernel-halves-transposed", {"halves_transposed": True},
         gff={"halves_transposed": True}),
    port("gff-roles-swapped", {"roles": "b-gated"}, gff={"roles": "b-gated"}),
    port("gff-complement-clamped-at-zero", {"roles": "complement-clamped"},
         gff={"roles": "complement-clamped"}),
    port("gff-complement-clipped", {"roles": "complement-clipped"},
         gff={"roles": "complement-clipped"}),
    port("gff-gate-on-both", {"roles": "both"}, gff={"roles": "both"}),
    port("gff-no-bias", {"bias": False}, gff={"bias": False}),
    port("gff-softmax-axis-0", {"axis": 0}, gff={"axis": 0}),
    port("gff-softmax-implicit-dim", {"axis": "implicit"}, gff={"axis": "implicit"}),
    port("gff-softmax-over-every-axis", {"axis": "all"}, gff={"axis": "all"}),
    port("gff-always-sigmoid", {"activation": "sigmoid"}, gff={"fixed": "sigmoid"}),
    # ACTS.get(name, torch.sigmoid) with the relu entry missing: one activation falls through
    port("gff-relu-falls-back-to-sigmoid", r"^GatedFeatureFusion: activation='relu' computes "
         r"the sigmoid gate: .* its sigmoid, tanh, softmax gates are the spec's",
         gff={"fallback": {"relu": "sigmoid"}}),
    port("gff-relu-capped-at-1", r"^GatedFeatureFusion: activation='relu' computes "
         r"min\(max\(z, 0\), 1\), a ReLU capped at 1 .* the port's sigmoid, tanh, softmax gates "
         r"are the spec's", gff={"relu_capped": True}),
    port("gff-gate-sees-a", {"sees": "a"}, gff={"sees": "a"}),
    port("gff-gate-sees-a-twice", {"sees": "aa"}, gff={"sees": "aa"}),
    port("gff-gated-residual", {"roles": "residual"}, gff={"roles": "residual"}),
    port("gff-lerp-from-a", {"roles": "lerp-from-a"}, gff={"roles": "lerp-from-a"}),
    port("gff-complement-parentheses", {"roles": "precedence"}, gff={"roles": "precedence"}),
    port("gff-complement-of-logits", {"roles": "logits"}, gff={"roles": "logits"}),
    port("gff-tanh-rescaled", {"tanh": "rescaled"}, gff={"tanh_rescaled": True}),
    port("gff-activation-before-dense", {"activation_site": "input"}, gff={"act_first": True}),
    port("dense1-bias-ignored", {"biases": ("dense2",)}, fm={"bias1_ignored": True}),
    # outside the variant space: named by the staged probe (portspec.localise), a pattern
    port("relu-after-second-dense", r"adds max\(c, 0\) \(a ReLU after the second Dense\)",
         fm={"relu_after_dense2": True}),
    port("residual-halved", r"the residual: .* returns 0\.5 x in inference and training",
         fm={"residual_scale": 0.5}),
    port("normalise-mean-only", r"in inference the normalisation subtracts the moving mean and "
         r"divides by 1 \(not scaled\)", fm={"mean_only": True}),
    port("leaky-relu-activation", r"the activation after the first Dense is LeakyReLU\(0\.2\), "
         "not ReLU", fm={"activation": staticmethod(lambda v: F.leaky_relu(v, 0.2))}),
    port("epsilon-outside-sqrt-in-training", r"in training the normalisation subtracts the "
         r"batch mean and divides by sqrt\(var\) \+ epsilon;",
         fm={"eps_outside_in_training": True}),
    port("training-variance-about-the-moving-mean", r"in training .* divides by sqrt\(the "
         r"variance about the moving mean \+ epsilon\)", fm={"var_about_moving": True}),
    port("dense2-bias-after-dropout", r"the second Dense's bias is added after the second "
         "dropout", fm={"bias2_after_dropout": True}),
    port("gff-gate-bias-twice", r"with the bias added twice", gff={"bias_times": 2}),
    port("gff-gate-from-product", r"depends on a \* b as well", gff={"product_gate": True}),
    port("gff-gate-dropout", r"in training the gate is dropped out: .* rate 0\.1\b",
         gff={"gate_dropout": 0.1}),
    port("unflatten-not-the-inverse", r"the features flattened time-major, then reshaped to "
         r"\(batch, N, L\) and transposed back", fm={"unflatten": "T1"}),
    port("transpose-not-undone", r"the features flattened channel-major \(the input "
         r"transposed to \(batch, N, L\) first\) and reshaped back", fm={"unflatten": "T2"}),
    port("training-variance-about-the-whole-batch-mean", r"in training .* divides by sqrt\(the "
         r"variance about the whole batch's mean \(one scalar", fm={"var_centre": "grand"}),
    port("training-variance-not-centred", r"in training .* divides by sqrt\(the variance about "
         r"0 \(the mean square, not centred\)", fm={"var_centre": "zero"}),
    port("moving-variance-with-epsilon", r"the moving variance averages the batch variance \+ "
         r"epsilon", fm={"update_var_eps": True}),
    port("gff-gate-pooled-over-time", r"with the gate computed from the inputs averaged over "
         r"the axes between the batch and the features", gff={"pooled": True}),
    port("gff-activation-twice", r"sigmoid\(sigmoid\(concat\(a, b\) @ kernel \+ bias\)\): "
         r"the activation applied twice", gff={"act_twice": True}),
    port("relu-backward-straight-through", r"the backward between the second Dense and the "
         r"first Dense's output: .* the activation's derivative is wrong",
         fm={"activation": staticmethod(_StraightThroughReLU.apply)}),
    port("gff-sigmoid-backward-without-1-minus-s", r"the backward through the gate: the "
         r"activation's derivative", gff={"custom_sigmoid": True}),
    port("batch-of-one-not-updated", {"batch_one": "frozen"}, fm={"batch_one_frozen": True}),
    port("moving-variance-of-the-standardised-features", r"the moving variance averages the "
         r"variance of the standardised features", fm={"update_with_output": True}),
    port("gff-complement-sign-flipped", r"act\(z\) a - \(1 - act\(z\)\) b: the complement's "
         r"sign flipped", gff={"roles": "minus"}),
    port("epsilon-as-a-variance-floor", r"divides by sqrt\(max\(var, epsilon\)\) \(epsilon a "
         r"floor under the variance", fm={"eps_floor": True}),
    port("dense1-bias-after-the-activation", r"the MLP computes the first Dense's bias added "
         r"after the activation", fm={"bias1_after_act": True}),
    port("relu-before-the-first-dense", r"the MLP computes a ReLU on the normalised features "
         r"before the first Dense as well", fm={"relu_before_dense1": True}),
    port("branch-subtracted", r"the MLP's output is subtracted from the input \(x - branch\)",
         fm={"branch_sign": -1.0}),
    port("gff-gate-of-normalised-inputs", r"the gate sees normalised inputs: its "
         r"pre-activation is affine in concat\(LayerNorm\(a\), LayerNorm\(b\)\) \(epsilon "
         r"1e-05", gff={"ln_inputs": True}),
    port("gff-softmax-unguarded", r"the softmax overflows: computed as exp\(z\) / "
         r"sum\(exp\(z\)\) without subtracting the max", gff={"naive_softmax": True}),
    port("gff-sigmoid-from-its-formula", r"^GatedFeatureFusion: the sigmoid is written from "
         r"its formula, 1 / \(1 \+ exp\(-z\)\)", gff={"formula_sigmoid": True}),
    port("gff-sigmoid-from-tanh-without-the-half", r"^GatedFeatureFusion: the sigmoid computes "
         r"sigmoid\(2 z\), where z is the gate's pre-activation: the port's tanh, relu, softmax "
         r"gates are the spec's", gff={"tanh_sigmoid": True}),
    port("gff-softmax-global-max", r"the softmax is not stable: computed as exp\(z - max z\) "
         r"/ sum\(exp\(z - max z\)\) with the max of the whole tensor",
         gff={"global_max": True}),
    port("moving-stats-updated-then-used-in-training", r"in training the normalisation "
         r"subtracts the moving mean as this call updated it \(updated first, then used\)",
         fm={"update_first": True}),
    port("normalisation-output-unused", r"the normalisation is not applied: the first Dense "
         r"reads the input x itself", fm={"norm_output_unused": True}),
    port("normalisation-without-standardising", r"the normalisation does not standardise: it "
         r"computes gamma x \+ beta on the input itself", fm={"standardise": False}),
    port("relu-after-the-residual", r"the residual: with the second Dense's kernel and bias 0 "
         r"the port returns max\(x, 0\) \(a ReLU applied after the residual",
         fm={"relu_after_residual": True}),
    port("dense2-reads-the-pre-activation", {"activation": "identity", "sites": ("dropout2",)},
         fm={"dense2_reads_pre": True}),
    port("input-standardised-in-place", r"the port returns the input standardised, "
         r"\(x - mean\) / sqrt\(var \+ epsilon\) by the call's statistics: the "
         r"normalisation standardises its input in place", fm={"inplace_input": True}),
    # ... and its scale and offset too: the residual reads the normalised input, a variant
    port("residual-added-into-the-input", r"^FeatureMixing: the residual sum is written into "
         r"the layer's input in place", fm={"residual": "into-input"}),
    port("input-normalised-in-place", r"^FeatureMixing: the normalisation changes the layer's "
         r"input in place .* \(the residual adding the normalised input instead of",
         fm={"inplace_input": "affine"}),
    port("dropout-on-the-first-dense-input", {"sites": ("input", "dropout2")},
         fm={"input_dropout": True, "sites": (2,)}),
    # running.mul_(1 - m).add_(batch) where add_(batch, alpha=m) was meant
    port("moving-stats-batch-added-in-full", r"updated as 0.01 old \+ 1 batch, weights that do "
         r"not sum to 1 .*the batch statistic is added in full", fm={"batch_weight": 1.0}),
    port("moving-variance-averages-the-mean", r"the moving variance averages the batch mean "
         r"\(the mean's value where the variance was meant\)",
         fm={"update_var_with_mean": True}),
    port("gff-inputs-interleaved", r"the gate's input interleaves a and b \(a0, b0, a1, b1",
         gff={"sees": "interleaved"}),
    port("residual-projection", r"holds weights outside the layer's table \(proj.weight, "
         r"proj.bias: .*with proj.weight the identity and proj.bias 0 the port's float64 "
         r"inference output is the spec's", fm={"residual_projection": True}),
    port("branch-scaled-by-rezero-alpha", r"^FeatureMixing: the port's module holds weights "
         r"outside the layer's table \(alpha: 1 trainable .*: as built the layer returns its "
         r"input unchanged: .*with alpha 1 the port's float64 inference output is the spec's",
         fm={"rezero": True}),
    port("output-cast-to-float32", r"^FeatureMixing: the output is cast to float32 \(a "
         r"float64 call returns float32", fm={"output_float32": True}),
    port("dropout-module-as-config", r"^FeatureMixing: get_config reports dropout=Dropout\(p="
         r"0.1, inplace=False\) for a layer built with dropout=0.1", fm={"dropout_module": True}),
    port("gff-complement-term-missing", r"the fusion computes act\(z\) a: the \(1 - act\(z\)\) "
         r"b term left out", gff={"roles": "glu"}),
    port("bn-scale-one-plus-gamma", r"the normalisation scales by \(1 \+ gamma\), not gamma",
         fm={"scale_offset": True}),
    port("batch-variance-one-pass", r"the batch variance computed in one pass as E\[x\^2\] - "
         r"E\[x\]\^2", fm={"one_pass": True}),
    port("batch-variance-std-squared", r"at a training batch of one \(batch variance 0\) the "
         r"gradients are not finite", fm={"std_squared": True}),
    port("dropout-on-the-block-input", r"^FeatureMixing: in training the layer's input is "
         r"dropped out before the residual reads it", fm={"block_input_dropout": True,
                                                          "sites": (2,)}),
    port("moving-stats-plain-attributes", r"^FeatureMixing: the port keeps moving_mean, "
         r"moving_var as plain tensor attributes, not registered buffers",
         fm={"plain_stats": True}),
    port("normalisation-checkpointed", r"^FeatureMixing: a training call that computes "
         r"gradients updates the moving statistics twice", fm={"checkpointed": True}),
    port("trainable-bias-as-a-plain-tensor", r"^FeatureMixing: the port keeps lin2.bias, a "
         r"trainable weight of the spec's, as a plain tensor attribute, not an nn.Parameter",
         fm={"bias2_plain": True}),
    port("moving-stats-not-persistent", r"the native load does not restore norm.moving_mean, "
         r"norm.moving_variance: .* \(the port's moving_mean, moving_var are buffers "
         r"registered with persistent=False", fm={"persistent": False}),
    port("batch-statistics-over-every-element", {"batch_stats": "elements"},
         fm={"by_elements": True}),
    port("batch-stats-in-inference-until-trained", r"^FeatureMixing: inference uses the batch "
         r"statistics until the layer has made a training call", fm={"until_trained": True}),
    port("affine-detached-in-training", r"^FeatureMixing: norm\.beta, norm\.gamma get no "
         r"gradient in training: autodiff gives exactly 0", fm={"affine_detached": True}),
    port("batchnorm-mode-from-grad-mode", r"^FeatureMixing: the layer's computation follows "
         r"autograd's grad mode, not the training flag alone: its inference and training "
         r"calls give", fm={"mode_from_grad": True}),
    port("moving-stats-seeded-by-the-first-batch", r"^FeatureMixing: the first training call "
         r"copies the batch's mean and variance into the moving statistics",
         fm={"seeded": True}),
    port("momentum-a-float32-buffer", r"^FeatureMixing: the port's module holds weights "
         r"outside the layer's table \(momentum: 0 trainable and 1 non-trainable values\): a "
         r"hyperparameter held as state: momentum holds 0\.009999999776, the momentum",
         fm={"momentum_buffer": True}),
    port("moving-stats-made-float16", r"^FeatureMixing: a FeatureMixing of this port built at "
         r"the default dtype holds norm.moving_mean, norm.moving_variance in float16 where its "
         r"other weights are float32 \(a dtype given where they are made, dtype=float16",
         fm={"__init__": _stats_half}),
    port("epsilon-a-float32-tensor-attribute", r"^FeatureMixing: the port's module holds "
         r"weights outside the layer's table \(eps: .*a hyperparameter held as a tensor: eps "
         r"holds 0\.001000000047, the epsilon, a plain tensor attribute .*\(checked: the "
         r"port's float64 inference output is the spec's with epsilon 0\.001000000047",
         fm={"__init__": _eps_as_tensor}),
    port("momentum-rounded-to-float32", r"^FeatureMixing: the momentum is rounded to float32 "
         r"\(float32\(0\.01\)\) before the update: it keeps 0\.009999999776",
         fm={"momentum_f32": True}),
    port("moving-stats-a-cumulative-average", r"^FeatureMixing: the moving statistics are a "
         r"cumulative average of the training batches seen .* give the momentum a value: "
         r"momentum=0\.99 in PyTorch's sense", fm={"cumulative": True}),
    port("inference-under-inference-mode", r"^FeatureMixing: part of the call runs under "
         r"torch\.inference_mode\(\)", fm={"inference_mode": True}),
    port("batch-size-kept-from-the-first-call", r"^FeatureMixing: the layer keeps a shape "
         r"from its first call or its build", fm={"batch_kept": True}),
    port("kernels-drawn-from-rand-times-limit", r"^FeatureMixing: initial weights drawn "
         r"from a uniform not centred on 0, U\(0, limit\)", fm={"kernel_rand": True}),
    port("biases-left-at-the-linear-default", r"^FeatureMixing: initial weights drawn from "
         r"PyTorch's default Linear initialisation .*, the port's framework's default",
         fm={"bias_default": True}),
    port("gff-gate-kernel-orthogonal", r"^GatedFeatureFusion: initial weights drawn from an "
         r"orthogonal initialiser", gff={"orthogonal": True}),
    port("gff-gate-kernel-gain-of-the-activation", r"^GatedFeatureFusion: the port's "
         r"initialiser depends on the config.*at activation='tanh', initial weights drawn from "
         r"Glorot-uniform with gain 5/3", gff={"activation_gain": True}),
    port("gff-gate-under-a-forced-autocast", r"^GatedFeatureFusion: a float32 call computed "
         r"partly in float16 or bfloat16 .*converted to bfloat16 in the port's own code",
         gff={"forced_autocast": True}),
    port("inverse-std-cached-as-a-buffer", r"^FeatureMixing: .*inv_std caches 1/sqrt\("
         r"moving_variance \+ epsilon\)", fm={"cached_inv_std": True}),
    port("zero-variance-guarded-to-zero", r"^FeatureMixing: where the variance is 0 the port "
         r"sets the standardised features to 0", fm={"zero_guard": True}),
    port("moving-stats-updated-on-a-cast-copy", r"^FeatureMixing: a bfloat16 training call "
         r"leaves norm.moving_mean, norm.moving_variance as they were",
         fm={"update_on_copy": True}),
    port("gff-computed-outside-autocast", r"^GatedFeatureFusion: under autocast the output "
         r"comes out float32: a bfloat16 value is converted to float32 in the port's own code",
         gff={"outside_autocast": True}),
]
# the ports judged under autocast too: their mistakes show only there
PORTS[-1].low_precision = PORTS[-2].low_precision = ("bfloat16",)



class Block(nn.Module):
    """A whole mixer block, time mixing then the layer (``fm``), where the layer was meant."""

    def __init__(self, n_series, input_size, dropout, ff_dim):
        super().__init__()
        self.time = nn.Linear(input_size, input_size)
        self.fm = FM(n_series, input_size, dropout, ff_dim)

    def forward(self, x):
        FM_SPEC.check_call({"input_size": self.fm.input_size, "n_series": self.fm.n_series},
                           tuple(x.shape), str(x.dtype).removeprefix("torch."))
        return self.fm(x + F.relu(self.time(x.transpose(1, 2))).transpose(1, 2))


class WholeBlock(Conforming):
    name, layers, fm = "whole-block", ("FeatureMixing",), Block
    expected = "holds weights outside the layer's table"  # a pattern: no variant is the block
    weights = {"FeatureMixing": {k: (f"fm.{path}", t) for k, (path, t)
                                 in _weights(FM)["FeatureMixing"].items()}}


class ConfigNamesSwapped(Conforming):
    """The layer to the spec; its adapter's renaming passes n_series as ff_dim and back."""

    name, layers = "config-names-swapped", ("FeatureMixing",)
    expected = "built with n_series and ff_dim swapped"  # a pattern: no variant is the map
    config_names = {"n_series": "ff_dim", "ff_dim": "n_series"}


class ScalarGate(Conforming):
    """One scalar gate per sample, a Linear of one unit broadcast over the features; the
    adapter declares the gate's weights held at that width."""

    name, layers = "gff-scalar-gate", ("GatedFeatureFusion",)
    expected = {"width": "one"}
    gff = type("GFF_scalar_gate", (GFF,), {"width": 1})
    weights = {**_weights(FM), "GatedFeatureFusion": {
        "gate.kernel": held_as("gate.weight", transform=transpose, why="a gate of one unit"),
        "gate.bias": held_as("gate.bias", why="a gate of one unit")}}


class _FMOverTime(FM):
    """The Dense layers applied to x.transpose(1, 2): they mix the time steps, not the
    channels (TSMixer's time-mixing MLP where the channel-mixing one was meant)."""

    def __init__(self, n_series, input_size, dropout, ff_dim):
        super().__init__(n_series, input_size, dropout, ff_dim)
        self.lin1, self.lin2 = nn.Linear(input_size, ff_dim), nn.Linear(ff_dim, input_size)
        for lin in (self.lin1, self.lin2):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def branch(self, z):
        p = self._rate()
        h = F.dropout(F.relu(self.lin1(z.transpose(1, 2))), p, self.training)
        self._m2 = None
        return F.dropout(self.lin2(h), p, self.training).transpose(1, 2)


class DenseOverTime(Conforming):
    name, layers, fm = "dense-over-time", ("FeatureMixing",), _FMOverTime
    expected = (r"^FeatureMixing: the channel MLP mixes along the time axis: .* the port holds "
                r"dense1.kernel \(6, 16\) for the spec's \(5, 16\) \(sized by input_size where "
                r"the spec's is by n_series\)")
    weights = {**_weights(FM), "FeatureMixing": {
        **_weights(FM)["FeatureMixing"],
        **{k: held_as(path, transform=transpose if k.endswith("kernel") else identity,
                      why="the Dense acts on each channel's time steps")
           for k, path in (("dense1.kernel", "lin1.weight"), ("dense2.kernel", "lin2.weight"),
                           ("dense2.bias", "lin2.bias"))}}}


class _GFFFusedBias(GFF):
    """The gate's kernel and bias as the rows of one (2F + 1, F) weight fed concat([a, b, 1]),
    drawn Glorot-uniform as one weight: its bias row is not 0, its kernel rows a narrower
    limit."""

    def __init__(self, features, activation="sigmoid"):
        super().__init__(features, activation)
        del self.gate
        self.gate_w = nn.Parameter(torch.empty(2 * features + 1, features))
        nn.init.xavier_uniform_(self.gate_w)

    def forward(self, a, b):
        g = self._act(torch.cat([a, b, torch.ones_like(a[..., :1])], -1) @ self.gate_w)
        return g * a + (1 - g) * b


class GateBiasDrawnWithKernel(Conforming):
    name, layers = "gate-bias-drawn-with-its-kernel", ("GatedFeatureFusion",)
    expected = (r"gate.kernel, gate.bias, parts of the port's one weight gate_w \(129, 64\), "
                r"initialised together as one weight drawn from Glorot-uniform")
    gff = _GFFFusedBias
    weights = {**_weights(FM), "GatedFeatureFusion": {
        "gate.kernel": part("gate_w", slice(None, -1)), "gate.bias": part("gate_w", -1)}}


class _GFFStackedKernel(GFF):
    """The gate's kernel held as (2, F, F), one (F, F) slice per input, drawn with
    xavier_uniform_ over that tensor: PyTorch counts its fans as (F * F, 2F)."""

    def __init__(self, features, activation="sigmoid"):
        super().__init__(features, activation)
        del self.gate
        self.kernel = nn.Parameter(torch.empty(2, features, features))
        self.offset = nn.Parameter(torch.zeros(features))
        nn.init.xavier_uniform_(self.kernel)

    def forward(self, a, b):
        z = torch.einsum("...i,ij->...j", a, self.kernel[0]) + torch.einsum(
            "...i,ij->...j", b, self.kernel[1]) + self.offset
        g = self._act(z)
        return g * a + (1 - g) * b


class StackedGateKernelXavier(Conforming):
    name, layers = "gff-stacked-kernel-xavier-over-3d", ("GatedFeatureFusion",)
    expected = (r"^GatedFeatureFusion: gate.kernel drawn Glorot-uniform over the port's "
                r"\(2, 64, 64\) tensor with the fans it has as that tensor, fan_in 4096 and "
                r"fan_out 128 \(PyTorch's xavier_")
    gff = _GFFStackedKernel
    weights = {**_weights(FM), "GatedFeatureFusion": {
        "gate.kernel": ("kernel", reshape()), "gate.bias": ("offset", identity)}}


class StatsSwappedInMap(Conforming):
    """The layer to the spec; its weight map gives each moving statistic the other's buffer."""

    name, layers = "moving-stats-swapped-in-map", ("FeatureMixing",)
    expected = {"map_swap": "stats"}
    weights = {**_weights(FM), "FeatureMixing": {
        **_weights(FM)["FeatureMixing"], "norm.moving_mean": ("moving_var", identity),
        "norm.moving_variance": ("moving_mean", identity)}}


class _FMRenamedOnSave(FM):
    """Saves its moving variance under Keras's name, and has no load that reads it back."""

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "moving_variance"] = destination.pop(prefix + "moving_var")


class RenamedOnSave(Conforming):
    """The layer to the spec, its map to the spec; its state_dict renames a buffer: the
    native save alone fails, and the weight table lists the buffer once, under its path."""

    name, layers, fm = "buffer-renamed-in-the-state-dict", ("FeatureMixing",), _FMRenamedOnSave
    expected = (r"^FeatureMixing: a natively saved layer does not load back \(RuntimeError: "
                r".*Missing key\(s\) in state_dict: \"moving_var\"")


class OffsetDeclaredAbsent(Conforming):
    """The layer to the spec; its weight map declares the BatchNorm offset absent, which the
    module holds (``beta``, trained and saved, never read back by the map)."""

    name, layers = "offset-declared-absent-but-held", ("FeatureMixing",)
    expected = (r"^FeatureMixing: the weight map declares norm.beta absent \('no offset'\), "
                r"but the port holds it: beta \(30,\), trainable, has the 30 values of the "
                r"spec's norm.beta \(30,\) and no entry maps it: map 'norm.beta' to 'beta'$")
    weights = {**_weights(FM), "FeatureMixing": {
        **_weights(FM)["FeatureMixing"], "norm.beta": absent("no offset")}}


class _FMTied(FM):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self.lin2  # "the up-projection reuses the down-projection's weight"
        self.bias2 = nn.Parameter(torch.zeros(self.n_series))

    def branch(self, z):
        h = self.drop(self.activation(self.lin1(z)), 1, self._mask(
            (*z.shape[:-1], self.ff_dim), z.dtype, self._rate()))
        return self.drop(h @ self.lin1.weight + self.bias2, 2, self._mask(
            z.shape, z.dtype, self._rate()))


class TiedKernels(Conforming):
    """FeatureMixing whose second Dense reuses the first's weight, transposed (tied weights);
    the map names lin1.weight for both kernels."""

    name, layers, fm = "tied-dense-kernels", ("FeatureMixing",), _FMTied
    expected = (r"dense1\.kernel and dense2\.kernel are one weight of the port "
                r"\('lin1\.weight'\)")  # a pattern: no variant is the map
    weights = {**_weights(FM), "FeatureMixing": {
        **_weights(FM)["FeatureMixing"], "dense2.kernel": ("lin1.weight", identity),
        "dense2.bias": ("bias2", identity)}}


class _GFFFlat(GFF):
    def forward(self, a, b):
        return super().forward(a, b).reshape(a.shape[0], -1)  # "back to (batch, features)"


class OutputFlattened(Conforming):
    """The fusion to the spec, its output reshaped to (batch, -1): right at rank 2, every
    axis after the batch axis flattened above it. No variant computes another shape."""

    name, layers = "gff-output-flattened", ("GatedFeatureFusion",)
    expected = r"^GatedFeatureFusion: inputs of rank > 2 come out flattened to \(batch, -1\)"
    gff = _GFFFlat


class _FMPlainList(FM):
    """The two Dense layers kept in a plain Python list, ``self.mlp = [nn.Linear, nn.Linear]``,
    where ``nn.ModuleList`` was meant: the layer computes with them, but PyTorch does not
    register them."""

    lin1 = property(lambda self: self.mlp[0])
    lin2 = property(lambda self: self.mlp[1])

    def __init__(self, n_series, input_size, dropout, ff_dim):
        super().__init__(n_series, input_size, dropout, ff_dim)
        mlp = [self._modules.pop("lin1"), self._modules.pop("lin2")]
        self.mlp = mlp


class DenseInPlainList(Conforming):
    name, layers, fm = "dense-in-plain-list", ("FeatureMixing",), _FMPlainList
    expected = (r"^FeatureMixing: the port keeps modules in mlp, a plain Python container "
                r"that PyTorch does not register \(nn.ModuleList or nn.ModuleDict does\)")
    weights = {**_weights(FM), "FeatureMixing": {
        **_weights(FM)["FeatureMixing"],
        "dense1.kernel": ("mlp.0.weight", transpose), "dense1.bias": ("mlp.0.bias", identity),
        "dense2.kernel": ("mlp.1.weight", transpose), "dense2.bias": ("mlp.1.bias", identity)}}


class GateSizedByAxis1(Conforming):
    """The gate built for ``input_shape[1]`` features (written for (batch, features) inputs),
    where the last axis was meant: right at rank 2, a gate of the wrong width at rank 3."""

    name, layers = "gff-gate-sized-by-axis-1", ("GatedFeatureFusion",)
    expected = (r"^GatedFeatureFusion: the port holds gate.kernel \(10, 5\) for the spec's "
                r"\(12, 6\) \(sized by the inputs' axis 1 where the spec's is by the inputs' "
                r"last axis\)")

    def construct(self, layer, config, *, input_shapes, dtype):
        return self.gff(input_shapes[0][1], **LAYERS[layer].validate_config(config))


class _FMDense2ToTime(FM):
    """The second Dense projects back to input_size where n_series was meant."""

    def __init__(self, n_series, input_size, dropout, ff_dim):
        super().__init__(n_series, input_size, dropout, ff_dim)
        self.lin2 = nn.Linear(ff_dim, input_size)
        nn.init.xavier_uniform_(self.lin2.weight)
        nn.init.zeros_(self.lin2.bias)


class Dense2ToInputSize(Conforming):
    name, layers, fm = "dense2-to-input-size", ("FeatureMixing",), _FMDense2ToTime
    expected = (r"^FeatureMixing: the port holds dense2.kernel \(16, 6\) for the spec's "
                r"\(16, 5\) \(sized by input_size where the spec's is by n_series\)")


class _FMModeInChild(FM):
    """The computation reads the mode of a child module (as nn.BatchNorm1d and nn.Dropout
    children read their own), and train() is overridden without super().train(mode): the
    child never leaves training mode."""

    def __init__(self, n_series, input_size, dropout, ff_dim):
        super().__init__(n_series, input_size, dropout, ff_dim)
        self.core = nn.Module()

    def forward(self, x):
        was, self.training = self.training, self.core.training
        try:
            return super().forward(x)
        finally:
            self.training = was

    def train(self, mode=True):  # "switch the mode": the children are left as they are
        self.training = mode
        return self


class TrainOverriddenWithoutSuper(Conforming):
    name, layers, fm = "train-overridden-without-super", ("FeatureMixing",), _FMModeInChild
    expected = (r"^FeatureMixing: the training flag never reaching the layer: every call "
                r"trains, .*\.eval\(\) leaves the submodules .*core in training mode")


ADAPTERS = [Conforming(), *(cls() for cls in PORTS), WholeBlock(), ConfigNamesSwapped(),
            ScalarGate(), StatsSwappedInMap(), OutputFlattened(), TiedKernels(),
            GateBiasDrawnWithKernel(), StackedGateKernelXavier(), DenseOverTime(),
            DenseInPlainList(), GateSizedByAxis1(), Dense2ToInputSize(),
            TrainOverriddenWithoutSuper(), OffsetDeclaredAbsent(), RenamedOnSave()]
