"""VMamba (VSSM) as released for ImageNet-1k classification: VMamba-S and VMamba-B (v2, "0229").

Our own definition, for frozen inference, of the configuration both checkpoints were trained
with (`classification/configs/vssm/vmambav2_{small,base}_224.yaml` in MzeroMiko/VMamba): a
two-convolution stem ("patchembed v2"), stages of VSS blocks (pre-norm SS2D, then an MLP) joined
by 3x3/2 convolutions ("downsample v3"), channels-first LayerNorms ("ln2d"), and an SS2D of
forward type "v05_noz": no gate branch, d_state 1, ssm_ratio 2, dt rank ceil(dim/16), a 3x3
depthwise convolution without bias, four scan directions, a LayerNorm on the merged output.

Parameter names and shapes mirror the official `VSSM` exactly, down to the indices of its
`nn.Sequential` stems (`patch_embed.0/2/5/7`, `layers.N.downsample.1/3`), so the released state
dict loads strictly with no key mapping. The selective scan is ours (`selective_scan`): pure
PyTorch on any device, mamba_ssm's kernel when installed and the input is on a GPU.

Shapes: images (B, 3, H, W) float; `forward_features` returns the last stage after the
classifier's norm, (B, 8·dims, H/32, W/32); `forward` its spatial mean, (B, 8·dims), which is what
the official classifier pools before its linear head.
"""

import math
from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from medprobe.extract.models.selective_scan import selective_scan

ScanFn = Callable[..., torch.Tensor]
# Four scan directions: rows, columns, and both reversed.
DIRECTIONS = 4


class Linear2d(nn.Linear):
    """A Linear applied over the channels of (B, C, H, W): the official checkpoint stores these
    weights with a Linear's shape (out, in), so a 1x1 Conv2d would not load."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of (B, C, H, W) ("ln2d")."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4, C, H·W): row-major, column-major, and each of them reversed."""
    rows = x.flatten(2)
    columns = x.transpose(2, 3).flatten(2)
    forward = torch.stack([rows, columns], dim=1)
    return torch.cat([forward, forward.flip(-1)], dim=1)


def cross_merge(ys: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse gather of `cross_scan`, summed: (B, 4, C, H·W) -> (B, C, H, W)."""
    ys = ys[:, :2] + ys[:, 2:].flip(-1)
    rows = ys[:, 0].unflatten(-1, (height, width))
    columns = ys[:, 1].unflatten(-1, (width, height)).transpose(2, 3)
    return rows + columns


class SS2D(nn.Module):
    """2D selective scan, forward type "v05_noz" (channels first, no z gate)."""

    def __init__(
        self, dim: int, *, d_state: int, ssm_ratio: float, d_conv: int, scan: ScanFn
    ) -> None:
        super().__init__()
        inner = int(ssm_ratio * dim)
        self.d_state = d_state
        self.dt_rank = math.ceil(dim / 16)
        self.scan = scan
        self.in_proj = Linear2d(dim, inner, bias=False)
        self.conv2d = nn.Conv2d(
            inner, inner, d_conv, padding=(d_conv - 1) // 2, groups=inner, bias=False
        )
        # One x projection and one dt projection per direction, stacked as the checkpoint does.
        projected = self.dt_rank + 2 * d_state
        self.x_proj_weight = nn.Parameter(torch.empty(DIRECTIONS, projected, inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(DIRECTIONS, inner, self.dt_rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(DIRECTIONS, inner))
        self.A_logs = nn.Parameter(torch.empty(DIRECTIONS * inner, d_state))
        self.Ds = nn.Parameter(torch.empty(DIRECTIONS * inner))
        self.out_norm = LayerNorm2d(inner)
        self.out_proj = Linear2d(inner, dim, bias=False)
        self._init_ssm()

    @torch.no_grad()
    def _init_ssm(self) -> None:
        """Mamba's initialisation, so that an architecture-only build (`--no-pretrained`,
        `--check`) computes something finite; loaded weights replace all of it."""
        inner = self.Ds.shape[0] // DIRECTIONS
        nn.init.uniform_(self.x_proj_weight, -(inner**-0.5), inner**-0.5)
        nn.init.uniform_(self.dt_projs_weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
        # softplus(bias) log-uniform in [1e-3, 0.1]: the bias is softplus's inverse of that.
        dt = torch.exp(torch.rand_like(self.dt_projs_bias) * math.log(100) + math.log(1e-3))
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        states = torch.arange(1, self.d_state + 1, device=self.A_logs.device)
        self.A_logs.copy_(states.log().expand_as(self.A_logs))  # S4D-real: A = -(1..N)
        self.Ds.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, dim, H, W) -> (B, dim, H, W)."""
        x = F.silu(self.conv2d(self.in_proj(x)))
        batch, inner, height, width = x.shape
        length = height * width
        xs = cross_scan(x)  # (B, 4, inner, L)
        projected = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dts, Bs, Cs = projected.split([self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        ys = self.scan(
            xs.reshape(batch, DIRECTIONS * inner, length),
            dts.reshape(batch, DIRECTIONS * inner, length).to(xs.dtype),
            -torch.exp(self.A_logs.float()),
            Bs.contiguous().to(xs.dtype),
            Cs.contiguous().to(xs.dtype),
            self.Ds.float(),
            delta_bias=self.dt_projs_bias.reshape(-1).float(),
            delta_softplus=True,
        )  # (B, 4·inner, L) float32
        y = cross_merge(ys.view(batch, DIRECTIONS, inner, length), height, width)
        # The official SS2D normalises the float32 scan output, then returns to the input dtype.
        return self.out_proj(self.out_norm(y).to(x.dtype))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = Linear2d(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = Linear2d(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VSSBlock(nn.Module):
    """Pre-norm: x + SS2D(norm(x)), then x + MLP(norm2(x)). Drop path is training-only."""

    def __init__(self, dim: int, *, mlp_ratio: float, **ssm_args) -> None:
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.op = SS2D(dim, **ssm_args)
        self.norm2 = LayerNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.op(self.norm(x))
        return x + self.mlp(self.norm2(x))


def _patch_embed(dim: int) -> nn.Sequential:
    """Patch size 4 as two 3x3/2 convolutions. The Identity slots hold the places of the official
    Permutes (no-ops channels first), so the parameter indices are 0, 2, 5 and 7 as there."""
    return nn.Sequential(
        nn.Conv2d(3, dim // 2, 3, stride=2, padding=1),
        nn.Identity(),
        LayerNorm2d(dim // 2),
        nn.Identity(),
        nn.GELU(),
        nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1),
        nn.Identity(),
        LayerNorm2d(dim),
    )


def _downsample(dim: int, out_dim: int) -> nn.Sequential:
    """3x3/2 convolution then norm; parameters at indices 1 and 3 as in the official module."""
    return nn.Sequential(
        nn.Identity(),
        nn.Conv2d(dim, out_dim, 3, stride=2, padding=1),
        nn.Identity(),
        LayerNorm2d(out_dim),
    )


class Classifier(nn.Module):
    """The official `classifier`: norm, spatial mean, and (only when asked for) the linear head."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else None


class VSSM(nn.Module):
    """VMamba; the defaults are the released S/B configuration except for width and depth
    (VMamba-S: dims 96, depths 2-2-15-2; VMamba-B: dims 128, same depths).

    dims: width of the first stage, doubled at each of the later stages;
    num_classes: 0 leaves out the ImageNet head (features only);
    scan: the selective scan, `selective_scan` unless a test substitutes the reference loop.
    """

    def __init__(
        self,
        *,
        dims: int = 96,
        depths: tuple[int, ...] = (2, 2, 15, 2),
        d_state: int = 1,
        ssm_ratio: float = 2.0,
        d_conv: int = 3,
        mlp_ratio: float = 4.0,
        num_classes: int = 0,
        scan: ScanFn = selective_scan,
    ) -> None:
        super().__init__()
        widths = [dims * 2**i for i in range(len(depths))]
        self.num_features = widths[-1]
        self.patch_embed = _patch_embed(dims)
        ssm_args = {"d_state": d_state, "ssm_ratio": ssm_ratio, "d_conv": d_conv, "scan": scan}
        self.layers = nn.ModuleList(
            nn.Sequential(
                OrderedDict(
                    blocks=nn.Sequential(
                        *(VSSBlock(dim, mlp_ratio=mlp_ratio, **ssm_args) for _ in range(depth))
                    ),
                    downsample=_downsample(dim, widths[i + 1])
                    if i < len(depths) - 1
                    else nn.Identity(),
                )
            )
            for i, (dim, depth) in enumerate(zip(widths, depths, strict=True))
        )
        self.classifier = Classifier(self.num_features, num_classes)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_features, H/32, W/32), after the classifier's norm."""
        x = self.patch_embed(images)
        for stage in self.layers:
            x = stage(x)
        return self.classifier.norm(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled embedding (B, num_features), or the logits when the head was built."""
        pooled = self.forward_features(images).mean(dim=(2, 3))
        head = self.classifier.head
        return pooled if head is None else head(pooled)
