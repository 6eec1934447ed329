"""The memory plan of a training step: what one GPU holds for a preset at a per-GPU batch.

State: fp32 weights, their gradients, AdamW's two moments and the EMA copy (20 bytes per parameter),
plus DDP's gradient buckets (4 more) on more than one GPU. Activations: the tensors autograd saves
for the backward pass, traced by running the forward on the meta device (no memory, no compute, any
preset at any batch) with a saved-tensors hook; views of one storage count once, parameters not at
all. The trace follows bf16 autocast for the ops that decide the saved dtypes (matmuls and convolutions
in bf16, norms and softmax in fp32) and counts attention as the fused kernels of a GPU store it (q, k,
v, the output and the log-sum-exp; no L x L matrix). That makes it an estimate; on a GPU,
`measure_step` runs the real step and reads the allocator's peak instead.

Activation checkpointing (dimr.models.checkpointing) keeps a marked block's input instead of its
saved tensors and rebuilds one block's tensors at a time in the backward pass, so from one trace:
kept = the rest + the marked blocks' inputs, peak = kept + the largest marked block's tensors.
"""

import dataclasses

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from dimr.models import build_model
from dimr.models.checkpointing import block_lists

GIB = 2**30
STATE_BYTES_PER_PARAM = {"weights": 4, "gradients": 4, "adam_moments": 8, "ema": 4}
DDP_BUCKET_BYTES_PER_PARAM = 4
# Kept free: the CUDA context, allocator fragmentation and the backward pass's transient buffers.
RESERVE_FRACTION, RESERVE_BYTES = 0.10, 1 * GIB
# A micro-batch below this leaves a GPU's matmuls small; the plan checkpoints blocks before going lower.
MIN_EFFICIENT_MICRO = 32

_BF16_OPS = {F.linear, F.conv2d, torch.matmul, torch.Tensor.__matmul__, torch.bmm, torch.baddbmm,
             torch.addmm}
_FP32_OPS = {F.layer_norm, F.group_norm, F.softmax, torch.softmax, torch.Tensor.softmax}
if hasattr(F, "rms_norm"):
    _FP32_OPS.add(F.rms_norm)


class _FusedAttention(torch.autograd.Function):
    """Saves what flash / memory-efficient attention saves; forward only (the trace never runs backward)."""

    @staticmethod
    def forward(ctx, q, k, v, bias):
        out = q.new_empty(q.shape[:-1] + v.shape[-1:])
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse, *([bias] if bias is not None else []))
        return out


class _TraceMode(TorchFunctionMode):
    """bf16 autocast for the meta device (autocast has no meta kernels), and fused attention."""

    def __init__(self, bf16: bool):
        super().__init__()
        self.bf16 = bf16

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, k, v = (self._cast(t, torch.bfloat16) for t in args[:3])
            bias = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
            return _FusedAttention.apply(q, k, v, bias)
        if self.bf16 and func in _BF16_OPS:
            args = tuple(self._cast(a, torch.bfloat16) for a in args)
        elif self.bf16 and func in _FP32_OPS:
            args = tuple(self._cast(a, torch.float32) for a in args)
        return func(*args, **kwargs)

    def _cast(self, t, dtype):
        if not self.bf16 or not isinstance(t, torch.Tensor) or not t.is_floating_point():
            return t
        return t.to(dtype)


@dataclasses.dataclass
class Trace:
    """Saved-tensor bytes of one forward pass at `batch`: outside the blocks, per block, block inputs."""

    batch: int
    params: int
    outside: dict       # storage key -> bytes
    blocks: list        # per block (lowest-resolution branch first): {storage key: bytes}
    inputs: list        # per block: (storage key, bytes) of its input x
    branch_of: list     # per block: its branch index

    def activation_bytes(self, every: list[int]) -> tuple[int, int]:
        """(kept through the backward pass, peak) with every k-th block of each branch checkpointed."""
        kept = dict(self.outside)
        rebuilt = 0
        position = {}
        for i, saved in enumerate(self.blocks):
            b = self.branch_of[i]
            j = position[b] = position.get(b, -1) + 1
            k = every[b]
            if k and j % k == k - 1:
                key, size = self.inputs[i]
                kept[key] = size
                rebuilt = max(rebuilt, sum(saved.values()))
            else:
                kept.update(saved)
        total = sum(kept.values())
        return total, total + rebuilt


def meta_model(model_cfg: dict):
    with torch.device("meta"):  # no memory and no initialisation compute, even for the 1B presets
        return build_model(model_cfg)


def trace(model_cfg: dict, batch: int, precision: str = "bf16", model=None) -> Trace:
    """Trace the saved tensors of one forward pass of `model_cfg` (or of its meta-device `model`) at
    `batch` on the meta device."""
    model = model if model is not None else meta_model(model_cfg)
    param_keys = {p.untyped_storage()._cdata for p in model.parameters()}
    blocks = [blk for branch in block_lists(model) for blk in branch]
    branch_of = [b for b, branch in enumerate(block_lists(model)) for _ in branch]
    saved = {"outside": {}, "blocks": [{} for _ in blocks]}
    inputs = [(None, 0)] * len(blocks)
    current = []
    alive = []  # every tensor whose storage is a key stays referenced: no address is reused as a key

    def pack(t):
        key = t.untyped_storage()._cdata
        if key not in param_keys:
            target = saved["blocks"][current[-1]] if current else saved["outside"]
            target[key] = t.untyped_storage().nbytes()
        return t

    def enter(i):
        def hook(module, args):
            x = args[0]
            alive.append(x)
            inputs[i] = (x.untyped_storage()._cdata, x.untyped_storage().nbytes())
            current.append(i)
        return hook

    def leave(module, args, output):
        current.pop()  # returns None: a forward hook's return value would replace the block's output

    handles = [blk.register_forward_pre_hook(enter(i)) for i, blk in enumerate(blocks)]
    handles += [blk.register_forward_hook(leave) for blk in blocks]
    c = model_cfg["in_channels"] + model_cfg.get("cond_channels", 0)
    r = model_cfg["resolution"]
    x = torch.empty(batch, c, r, r, device="meta")
    c_noise = torch.empty(batch, device="meta")
    y = torch.zeros(batch, dtype=torch.long, device="meta")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _TraceMode(precision == "bf16"):
        out = model(x, c_noise, y)  # its graph holds the saved tensors until the trace is counted
    for h in handles:
        h.remove()
    # A block's saved tensors that another part also saves count once, outside.
    for block in saved["blocks"]:
        for key in list(block):
            if key in saved["outside"]:
                del block[key]
    result = Trace(batch, sum(p.numel() for p in model.parameters()), saved["outside"], saved["blocks"],
                   inputs, branch_of)
    del out  # the graph, and with it every traced tensor
    return result


@dataclasses.dataclass
class Plan:
    """One GPU's memory for a per-GPU batch, and the micro-batch / checkpointing that fits it."""

    params: int
    gpus: int
    precision: str
    batch_per_gpu: int
    state_bytes: dict
    activation_bytes: dict   # checkpointing label -> (kept, peak) at batch_per_gpu
    gpu_bytes: int
    max_micro: dict          # checkpointing label -> largest micro-batch that fits
    choice: dict             # {"checkpoint_blocks": K, "batch_gpu": micro, "accumulation": steps}
    source: str = "estimate (meta-device trace)"

    @property
    def state_total(self) -> int:
        return sum(self.state_bytes.values())


CHECKPOINT_CHOICES = {"none": 0, "every 2nd block": 2, "every block": 1}


def usable_bytes(gpu_bytes: int) -> int:
    return int(gpu_bytes * (1 - RESERVE_FRACTION)) - RESERVE_BYTES


def plan(model_cfg: dict, batch_per_gpu: int, gpus: int = 8, gpu_gib: float = 80.0,
         precision: str = "bf16") -> Plan:
    """The memory plan at `batch_per_gpu`, and the (checkpointing, micro-batch) to train it with.

    Activations grow linearly with the batch: two traces (batch 2 and 4) give the per-image and fixed
    parts, so the largest micro-batch that fits is solved for, not searched. (Not batch 1: there some
    reshapes return views where larger batches copy, so its storages are not the same set.)
    """
    model = meta_model(model_cfg)
    n_branches = len(block_lists(model))
    t2, t4 = trace(model_cfg, 2, precision, model), trace(model_cfg, 4, precision, model)
    params = t2.params
    state = {k: v * params for k, v in STATE_BYTES_PER_PARAM.items()}
    if gpus > 1:
        state["ddp_buckets"] = DDP_BUCKET_BYTES_PER_PARAM * params
    gpu_bytes = int(gpu_gib * GIB)
    free = usable_bytes(gpu_bytes) - sum(state.values())
    acts, max_micro = {}, {}
    for label, k in CHECKPOINT_CHOICES.items():
        every = [k] * n_branches
        (k2, p2), (k4, p4) = t2.activation_bytes(every), t4.activation_bytes(every)
        per_image, fixed = (p4 - p2) // 2, 2 * p2 - p4
        kept = (2 * k2 - k4) + (k4 - k2) // 2 * batch_per_gpu
        acts[label] = (kept, fixed + per_image * batch_per_gpu)
        max_micro[label] = max(0, (free - fixed) // per_image) if per_image > 0 else batch_per_gpu
    return Plan(params, gpus, precision, batch_per_gpu, state, acts, gpu_bytes, max_micro,
                choose(batch_per_gpu, max_micro))


def block_lists_of(model_cfg: dict) -> list:
    return block_lists(meta_model(model_cfg))


def largest_divisor_at_most(n: int, limit: int) -> int:
    return max((d for d in range(1, n + 1) if n % d == 0 and d <= limit), default=0)


def choose(batch_per_gpu: int, max_micro: dict) -> dict:
    """No checkpointing when the whole per-GPU batch fits, or when accumulation keeps micro-batches of
    MIN_EFFICIENT_MICRO or more; otherwise checkpoint every block (the official DiMR code's choice) and
    take the largest micro-batch that fits. Micro-batches divide the per-GPU batch, so the global batch,
    and under `train.draws: sample` the results, stay the same on every GPU model."""
    for label in ("none", "every block"):
        micro = largest_divisor_at_most(batch_per_gpu, max_micro[label])
        if micro == batch_per_gpu or (label == "none" and micro >= MIN_EFFICIENT_MICRO) or \
                (label == "every block" and micro >= 1):
            return {"checkpoint_blocks": CHECKPOINT_CHOICES[label], "batch_gpu": micro,
                    "accumulation": batch_per_gpu // micro}
    return {"checkpoint_blocks": 1, "batch_gpu": 0, "accumulation": 0}  # not even one image fits


def measure_step(model_cfg: dict, batch: int, every: int, precision: str = "bf16") -> int:
    """Peak bytes the CUDA allocator saw in one forward, backward and AdamW step (GPU only)."""
    from dimr.models.checkpointing import set_checkpointing

    dev = torch.device("cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(dev)
    model = build_model(model_cfg).to(dev)
    ema = build_model(model_cfg).to(dev).requires_grad_(False)
    set_checkpointing(model, [every] * len(block_lists(model)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    c = model_cfg["in_channels"] + model_cfg.get("cond_channels", 0)
    x = torch.randn(batch, c, model_cfg["resolution"], model_cfg["resolution"], device=dev)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = model(x, torch.rand(batch, device=dev), torch.zeros(batch, dtype=torch.long, device=dev))
        loss = sum(o.float().square().mean() for o in (out if isinstance(out, list) else [out]))
    loss.backward()
    opt.step()
    peak = torch.cuda.max_memory_allocated(dev)
    del model, ema, opt, out, loss
    torch.cuda.empty_cache()
    return peak


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


# ----------------------------------------------------------------------------
# `dimr plan PRESET --batch N`


def add_arguments(p) -> None:
    from dimr.models import PRESETS

    p.add_argument("preset", help=f"model preset, one of: {', '.join(PRESETS)}")
    p.add_argument("--batch", type=int, required=True, help="images per GPU per optimiser step")
    p.add_argument("--gpus", type=int, default=8, help="GPUs of the run (more than 1 adds DDP's buckets)")
    p.add_argument("--gpu-memory", type=float, default=None,
                   help="GiB per GPU (default: this machine's GPU, else 80)")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"], help="training autocast")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model config field, e.g. --set depths=[15,8,8]")
    p.add_argument("--measure", action="store_true",
                   help="on a GPU: also run one real step per checkpointing choice and report its peak")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args) -> int:
    import json

    from dimr.errors import ConfigError
    from dimr.models import resolve_model_config
    from dimr.models.info import parse_overrides

    if args.batch <= 0 or args.gpus <= 0:
        raise ConfigError("--batch and --gpus must be positive")
    cuda = torch.cuda.is_available()
    gpu_gib = args.gpu_memory or (torch.cuda.get_device_properties(0).total_memory / GIB if cuda else 80.0)
    cfg = resolve_model_config(args.preset, parse_overrides(args.preset, args.overrides))
    p = plan(cfg, args.batch, args.gpus, gpu_gib, args.precision)
    measured = {}
    if args.measure:
        if not cuda:
            raise ConfigError("--measure runs a real training step: it needs a GPU (this machine has none)")
        for label, k in CHECKPOINT_CHOICES.items():
            try:
                measured[label] = measure_step(cfg, args.batch, k, args.precision)
            except torch.cuda.OutOfMemoryError:
                measured[label] = None
    if args.json:
        print(json.dumps({"preset": args.preset, **dataclasses.asdict(p), "state_total": p.state_total,
                          "measured_peak_bytes": measured}, sort_keys=True))
        return 0
    print(format_plan(args.preset, p, measured))
    return 0


def format_plan(preset: str, p: Plan, measured: dict | None = None) -> str:
    usable = usable_bytes(p.gpu_bytes)
    state = ", ".join(f"{k.replace('_', ' ')} {v / GIB:.2f}" for k, v in p.state_bytes.items())
    lines = [f"{preset}: {p.params / 1e6:.1f}M parameters; {p.batch_per_gpu} images per GPU on {p.gpus} "
             f"GPU(s) (global batch {p.batch_per_gpu * p.gpus}), {p.precision}, {p.gpu_bytes / GIB:.0f} GiB "
             f"per GPU ({usable / GIB:.1f} usable)",
             f"source: {p.source}",
             f"state (GiB): {state} = {p.state_total / GIB:.2f}",
             f"{'checkpointing':<18}{'activations':>13}{'peak':>11}{'total':>11}  "
             f"{'fits':<5}{'max micro':>10}"]
    for label, (kept, peak) in p.activation_bytes.items():
        total = p.state_total + peak
        lines.append(f"{label:<18}{kept / GIB:>9.2f} GiB{peak / GIB:>7.2f} GiB{total / GIB:>7.2f} GiB  "
                     f"{'yes' if total <= usable else 'no':<5}{p.max_micro[label]:>10}")
    for label, peak in (measured or {}).items():
        lines.append(f"measured peak, {label}: " + (gib(peak) if peak is not None else "out of memory"))
    c = p.choice
    if c["batch_gpu"]:
        ckpt = {0: "0 (none)", 1: "1 (every block)", 2: "2 (every 2nd block)"}[c["checkpoint_blocks"]]
        lines.append(f"train with: --batch-gpu {c['batch_gpu']} ({c['accumulation']} accumulation step(s)) "
                     f"--checkpoint-blocks {ckpt}")
    else:
        lines.append("does not fit: not one image per GPU, even checkpointing every block")
    return "\n".join(lines)


def training_choice(model_cfg: dict, per_rank: int, world: int, precision: str, draws: str,
                    batch_gpu, checkpoint_blocks, gpu_bytes: int | None) -> tuple[int, str, str]:
    """(micro-batch, --checkpoint-blocks text, a line for the log) of `dimr train`.

    "auto" (the default of both options) asks the plan, on a GPU (`gpu_bytes`); on the CPU there is no
    memory limit to plan for: the whole per-process batch, no checkpointing. A given value is kept.
    Under `train.draws: rank` the micro-batch split changes the random draws, so auto keeps the whole
    per-process batch there and says when it would not fit.
    """
    auto_micro, auto_ckpt = batch_gpu == "auto", checkpoint_blocks == "auto"
    micro = per_rank if auto_micro else int(batch_gpu)
    ckpt = "0" if auto_ckpt else checkpoint_blocks
    if gpu_bytes is None or not (auto_micro or auto_ckpt):
        return micro, ckpt, ""
    p = plan(model_cfg, per_rank, world, gpu_bytes / GIB, precision)
    c = p.choice
    if auto_ckpt:
        ckpt = str(c["checkpoint_blocks"])
    if auto_micro and draws == "sample" and c["batch_gpu"]:
        micro = c["batch_gpu"]
    note = ""
    if auto_micro and draws == "rank" and c["batch_gpu"] != per_rank:
        note = (f"; it suggests --batch-gpu {c['batch_gpu']}, kept at {per_rank} because train.draws 'rank' "
                "ties the random draws to the micro-batch split (set train.draws: sample)")
    return micro, ckpt, (f"memory plan ({p.source}, {gpu_bytes / GIB:.0f} GiB per GPU): micro-batch {micro}, "
                         f"--checkpoint-blocks {ckpt}{note}")
