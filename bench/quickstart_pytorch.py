"""PyTorch twin of the quickstart grid: the same cells, end to end, in PyTorch + transformers.

    .venv-libtorch/bin/python bench/quickstart_pytorch.py [experiments/quickstart.toml] [--threads 2]

Reads the grid file itself (its [train] settings, the one model, dataset and comparative loss,
the seeds), so the twin follows the file when the quickstart grows. Each cell, timed from
loading the model to the last ablation evaluation, as `neuronlab grid run` times a cell:

- AutoModelForSequenceClassification on the checkpoint (BERT: the pooler and a fresh 2-way
  classifier, as neuronlab's default pooling), eager attention, seeded with the cell's seed;
- the training sentences tokenised once (truncated to max_seq_len), each batch padded to its
  longest; the epoch order as neuronlab draws it: a seeded shuffle, with group_by_length
  mega-batches of 50 batches sorted by length, longest first, and the batches shuffled;
- AdamW (eps 1e-8, weight decay on matrices only), linear warmup (ceil(warmup_ratio x steps))
  and decay, clip_grad_norm_(max_grad_norm);
- the baseline: cross-entropy with the model's dropout; the comparative loss: the official
  algorithm of bench/step_pytorch.py (the full model with dropout closed, then the c views one
  after another with p_k = 1 - (1 - p)^k and the RNG restored before each, pairwise hinge with
  the dummy b = 0);
- accuracy on the first max_eval_examples validation sentences every eval_every steps and at
  the end, the best state kept in memory (neuronlab also writes a resumable checkpoint to disk);
- the best model evaluated with a fraction r of every layer's FFN neurons ablated (fixed random
  masks, kept units scaled by 1 / (1 - r)) for each ablation rate.

The random streams (order, dropout, head init, ablation masks) are torch's and Python's, not
neuronlab's, so accuracies agree within seed noise, not to the digit. Prints one JSON line per
cell and one for the whole grid.
"""

import argparse
import copy
import json
import math
import os
import pathlib
import random
import statistics
import time
import tomllib

import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from step_pytorch import comparative_loss, set_dropout


def resolve(path, artefacts):
    return pathlib.Path(path.replace("${ARTEFACTS}", str(artefacts)))


def read_jsonl(path, text_key, label_key, labels):
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            label = row[label_key]
            rows.append((row[text_key], labels.index(label) if isinstance(label, str) else int(label)))
    return rows


def epoch_order(lens, seed, epoch, batch, grouped):
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lens)))
    rng.shuffle(order)
    if grouped:
        megas = [sorted(order[i:i + batch * 50], key=lambda j: -lens[j])
                 for i in range(0, len(order), batch * 50)]
        order = [j for m in megas for j in m]
        batches = [order[i:i + batch] for i in range(0, len(order), batch)]
        rng.shuffle(batches)
        order = [j for b in batches for j in b]
    return order


def pad(encoded, rows, pad_id):
    width = max(len(encoded[i]) for i in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, i in enumerate(rows):
        ids[r, :len(encoded[i])] = torch.tensor(encoded[i])
        mask[r, :len(encoded[i])] = 1
    return ids, mask


def accuracy(model, encoded, labels, pad_id, batch):
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(encoded), batch):
            rows = list(range(start, min(start + batch, len(encoded))))
            ids, mask = pad(encoded, rows, pad_id)
            pred = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
            correct += (pred == torch.tensor([labels[i] for i in rows])).sum().item()
    model.train()
    return correct / len(encoded)


def run_cell(grid, seed, loss_name, artefacts):
    t = grid["train"]
    started = time.perf_counter()
    (model_spec,) = grid["models"].values()
    (data_spec,) = grid["datasets"].values()
    model_dir = resolve(model_spec["path"], artefacts)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    labels = data_spec["labels"]
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(labels), attn_implementation="eager").train()
    data_dir = resolve(data_spec["path"], artefacts)
    cols = data_spec["columns"]
    train = read_jsonl(data_dir / data_spec["train_file"], cols["text"], cols["label"], labels)
    valid = read_jsonl(data_dir / data_spec["eval_file"], cols["text"], cols["label"], labels)
    valid = valid[:t.get("max_eval_examples", len(valid))]
    encode = lambda rows: [tokenizer(text, truncation=True, max_length=t["max_seq_len"])["input_ids"]
                           for text, _ in rows]
    train_ids, valid_ids = encode(train), encode(valid)
    train_labels, valid_labels = [y for _, y in train], [y for _, y in valid]
    pad_id = tokenizer.pad_token_id

    loss = grid["losses"].get(loss_name, {"kind": "baseline"})
    c = loss.get("n_drop", 0) if loss["kind"] == "comparative" else 0
    p = loss.get("p", model.config.hidden_dropout_prob)
    if c:
        set_dropout(model, p)
    decay = [w for w in model.parameters() if w.dim() >= 2]
    no_decay = [w for w in model.parameters() if w.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": t["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=t["learning_rate"], eps=1e-8)
    total = t["max_steps"]
    warmup = math.ceil(t.get("warmup_ratio", 0.0) * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: s / warmup if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))

    lens = [len(x) for x in train_ids]
    batch = t["batch_size"]
    epoch, order, cursor = 0, None, 0
    best = (-1.0, None, 0)
    for step in range(total):
        if order is None or cursor >= len(order):
            order = epoch_order(lens, seed, epoch, batch, t.get("group_by_length", False))
            epoch, cursor = epoch + 1, 0
        rows = order[cursor:cursor + batch]
        cursor += batch
        ids, mask = pad(train_ids, rows, pad_id)
        y = torch.tensor([train_labels[i] for i in rows])
        if c == 0:
            loss_value = F.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, y)
        else:
            set_dropout(model, 0.0)
            rng = torch.get_rng_state()
            views = [F.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, y,
                                     reduction="none")]
            for k in range(1, c + 1):
                set_dropout(model, 1.0 - (1.0 - p) ** k)
                torch.set_rng_state(rng)
                views.append(F.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, y,
                                             reduction="none"))
            set_dropout(model, p)
            loss_value = comparative_loss(torch.stack(views))
        loss_value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.get("max_grad_norm", 1.0))
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        done = step + 1
        if done % t["eval_every"] == 0 or done == total:
            acc = accuracy(model, valid_ids, valid_labels, pad_id, 2 * batch)
            if acc > best[0]:
                best = (acc, copy.deepcopy(model.state_dict()), done)
    acc, state, best_step = best
    model.load_state_dict(state)
    gen = torch.Generator().manual_seed(seed)
    ablation = {}
    for rate in t.get("ablation_rates", []):
        hooks = []
        for layer in model.bert.encoder.layer:
            width = layer.intermediate.dense.out_features
            keep = (torch.rand(width, generator=gen) >= rate).float() / (1.0 - rate)
            hooks.append(layer.intermediate.register_forward_hook(
                lambda module, inputs, out, keep=keep: out * keep))
        ablation[f"ablation_{rate}"] = accuracy(model, valid_ids, valid_labels, pad_id, 2 * batch)
        for h in hooks:
            h.remove()
    return {"loss": loss_name, "seed": seed, "accuracy": acc, "best_step": best_step, **ablation,
            "seconds": time.perf_counter() - started}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("grid", nargs="?", default="experiments/quickstart.toml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--artefacts", default=os.environ.get("ARTEFACTS", ".cache/artefacts"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    grid = tomllib.loads(pathlib.Path(args.grid).read_text())
    cells = []
    started = time.perf_counter()
    for loss_name in grid["grid"]["loss"]:
        for seed in grid["grid"]["seed"]:
            cell = run_cell(grid, seed, loss_name, pathlib.Path(args.artefacts))
            print(json.dumps({"implementation": f"pytorch {torch.__version__}", **cell}), flush=True)
            cells.append(cell)
    by_loss = {}
    for cell in cells:
        by_loss.setdefault(cell["loss"], []).append(cell["accuracy"])
    print(json.dumps({
        "implementation": f"pytorch {torch.__version__} ({args.threads} threads)",
        "grid": grid["name"],
        "cells": len(cells),
        "cell_seconds": sum(c["seconds"] for c in cells),
        "wall_seconds": time.perf_counter() - started,
        "mean_accuracy": {k: statistics.mean(v) for k, v in by_loss.items()},
    }))


if __name__ == "__main__":
    main()
