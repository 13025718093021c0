"""Plain PyTorch reference for `cargo bench --bench train`: one training epoch of
resnet-mini (the same architecture as rst's `resnet-mini`), Adam with amsgrad, batch
size, data size and threads given on the command line, with the same augmentation
(zero-pad + random crop + horizontal flip) done per batch on tensors.

Prints one JSON line: {"images_per_s": ..., "epoch_s": ...} (best of the timed epochs).
Run with the project's virtualenv: .venv/bin/python benches/train_reference.py --n 900
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNetMini(nn.Module):
    def __init__(self, in_ch, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 16, 1))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32, 1))
        self.layer3 = nn.Sequential(BasicBlock(32, 64, 2), BasicBlock(64, 64, 1))
        self.head = nn.Linear(64, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def augment(x, pad, gen):
    n, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    out = torch.stack([xp[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=900)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--pad", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.n, 1, args.size, args.size), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, args.classes, (args.n,), generator=gen)
    x_all = (images.float() / 255.0 - 0.5) / 0.5
    model = ResNetMini(1, args.classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, amsgrad=True)
    times = []
    for epoch in range(args.epochs + 1):  # the first epoch is a warm-up
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(args.n, generator=gen)
        for i in range(0, args.n, args.batch):
            idx = perm[i:i + args.batch]
            x = augment(x_all[idx], args.pad, gen)
            loss = F.nll_loss(F.log_softmax(model(x), dim=1), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch > 0:
            times.append(time.perf_counter() - t0)
    best = min(times)
    print(json.dumps({"images_per_s": args.n / best, "epoch_s": best, "torch": torch.__version__, "threads": args.threads}))


if __name__ == "__main__":
    main()
