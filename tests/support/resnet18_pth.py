"""Writes a ResNet-18 state dict with torchvision's names and shapes (1000-class `fc`),
random values, saved by this PyTorch's `torch.save` (zip format) — a stand-in for
torchvision's `resnet18-f37072fd.pth` in tests (no network here).

    .venv/bin/python tests/support/resnet18_pth.py OUT.pth [OUT.bin]

With OUT.bin, also writes every floating tensor's float32 bytes (little-endian, row-major),
in state-dict order, and OUT.bin.json with their names and shapes: the reference the Rust
test compares the loaded model with, byte for byte, independently of rst's .pth reader.
torchvision is not installed in the project venv: the module tree below reproduces
torchvision.models.resnet18's parameter and buffer names.
"""
import json
import sys
from collections import OrderedDict

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )


class ResNet18(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        widths = [64, 128, 256, 512]
        cin = 64
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
            cin = w
        self.fc = nn.Linear(512, 1000)


def main():
    torch.manual_seed(0)
    m = ResNet18()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.1, 0.1)
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 2)
            mod.num_batches_tracked.fill_(100)
    sd = m.state_dict()
    torch.save(sd, sys.argv[1])
    if len(sys.argv) > 2:
        names = []
        with open(sys.argv[2], "wb") as f:
            for name, t in sd.items():
                if not t.is_floating_point():
                    continue
                f.write(t.contiguous().to(torch.float32).numpy().tobytes())
                names.append({"name": name, "shape": list(t.shape)})
        with open(sys.argv[2] + ".json", "w") as f:
            json.dump(names, f)


if __name__ == "__main__":
    main()
