"""GPU hyperparameter sweep (PyTorch replica of wordbot.training's model), used only to
choose the default model's settings; the default itself is trained on the CPU with Keras."""

import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.getcwd())
from wordbot.corpus import read_corpus, split_messages, token_stream, windows
from wordbot.ngram import KneserNey
from wordbot.text import BOS_ID, UNK_ID, Tokenizer, is_word

dev = os.environ.get("DEV", "cuda")
OUT = os.environ.get("OUT", "/tmp")
msgs = read_corpus(["data/corpus/fortunes-train.txt"])
train, val = split_messages(msgs, 0.05, 0)
tok = Tokenizer.build(train, 10000, 2)
V = len(tok)
trs = token_stream(train, tok)
kn = KneserNey.from_texts(train, tok, 5)
# Validation per message: inputs BOS..last, targets ..EOS
val_ids = [tok.encode(m, bos=True, eos=True) for m in val[: int(os.environ.get("NVAL", 400))]]
word_mask = np.zeros(V, bool)
word_mask[[i for i in tok.word_ids if i != UNK_ID]] = True
wm = torch.tensor(word_mask, device=dev)
# KN probabilities for each validation position (full distributions, float32)
kn_rows, kn_tgt = [], []
for ids in val_ids:
    st = kn.advance(kn.initial_state(), ids[0])
    for t in ids[1:]:
        kn_rows.append(kn.probs(st).astype(np.float32))
        st = kn.advance(st, t)
KN = torch.tensor(np.stack(kn_rows), device=dev)
TGT = torch.tensor(np.concatenate([ids[1:] for ids in val_ids]), device=dev)
is_w = torch.tensor([is_word(tok.vocab[t]) and t != UNK_ID for t in TGT.tolist()], device=dev)
is_w_all = torch.tensor([is_word(tok.vocab[t]) for t in TGT.tolist()], device=dev)


class LM(nn.Module):
    def __init__(s, E, H, L, p, cell="rnn", var=False, tokdrop=0.0):
        super().__init__()
        s.var, s.tokdrop, s.p = var, tokdrop, p
        s.emb = nn.Parameter(torch.empty(V, E).uniform_(-0.05, 0.05))
        s.bias = nn.Parameter(torch.zeros(V))
        kw = dict(num_layers=L, batch_first=True, dropout=p if L > 1 else 0)
        s.rnn = nn.RNN(E, H, nonlinearity="tanh", **kw) if cell == "rnn" else getattr(nn, cell.upper())(E, H, **kw)
        s.drop = nn.Dropout(p)
        s.proj = nn.Linear(H, E) if H != E else nn.Identity()

    def vdrop(s, x):
        if not s.training or s.p == 0:
            return x
        if not s.var:
            return s.drop(x)
        m = torch.bernoulli(torch.full((x.shape[0], 1, x.shape[2]), 1 - s.p, device=x.device)) / (1 - s.p)
        return x * m

    def forward(s, x):
        e = s.emb[x]
        if s.training and s.tokdrop:
            e = (
                e
                * torch.bernoulli(torch.full((x.shape[0], x.shape[1], 1), 1 - s.tokdrop, device=x.device))
                / (1 - s.tokdrop)
            )
        h, _ = s.rnn(s.vdrop(e))
        return s.proj(s.vdrop(h)) @ s.emb.T + s.bias


def evaluate(model):
    model.eval()
    with torch.no_grad():
        P = torch.cat([torch.softmax(model(torch.tensor([ids[:-1]], device=dev))[0], -1) for ids in val_ids])
    keep = TGT != UNK_ID
    res = {}
    for w in [0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0]:
        M = (1 - w) * P + w * KN
        ppl = math.exp(-torch.log(M[keep, TGT[keep]]).mean().item())
        S = M.masked_fill(~wm, -1)
        top3 = S.topk(3, -1).indices
        hit = (top3 == TGT[:, None]).any(-1) & is_w
        res[w] = (round(ppl, 1), round(hit[is_w_all].float().mean().item(), 4))
    model.train()
    return res


def run(name, E=256, H=512, L=1, p=0.5, lr=2e-3, seq=64, B=64, epochs=22, cell="rnn", var=False, tokdrop=0.0, wd=0.0):
    torch.manual_seed(0)
    x, y = windows(trs, seq)
    if os.environ.get("SMOKE"):
        x, y = x[:200], y[:200]
    X, Y = torch.tensor(x, device=dev, dtype=torch.long), torch.tensor(y, device=dev, dtype=torch.long)
    model = LM(E, H, L, p, cell, var, tokdrop).to(dev)
    opt = (
        torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
        if wd
        else torch.optim.Adam(model.parameters(), lr=lr)
    )
    best, bad, hist, t0 = math.inf, 0, [], time.time()
    best_state = None
    for ep in range(epochs):
        perm = torch.randperm(len(X), device=dev)
        for i in range(0, len(X), B):
            b = perm[i : i + B]
            logits = model(X[b])
            ce = nn.functional.cross_entropy(logits.reshape(-1, V), Y[b].reshape(-1), reduction="none")
            mask = (Y[b].reshape(-1) != BOS_ID).float()
            loss = (ce * mask).sum() / mask.sum()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        r = evaluate(model)
        v = r[0.0][0]
        hist.append((ep + 1, v, r[0.4]))
        if v < best:
            best, bad = v, 0
            best_state = {k: t.clone() for k, t in model.state_dict().items()}
        else:
            bad += 1
            for g in opt.param_groups:
                g["lr"] = max(g["lr"] * 0.5, 1e-5)
            if bad > 2:
                break
    model.load_state_dict(best_state)
    final = evaluate(model)
    out = {
        "name": name,
        "E": E,
        "H": H,
        "L": L,
        "p": p,
        "lr": lr,
        "seq": seq,
        "B": B,
        "epochs": epochs,
        "best_rnn_ppl": best,
        "final": {str(k): v for k, v in final.items()},
        "hist": hist,
        "sec": round(time.time() - t0),
    }
    print(json.dumps(out), flush=True)
    with open(os.path.join(OUT, f"sweep-{os.getpid()}.jsonl"), "a") as f:
        f.write(json.dumps(out) + "\n")


CONFIGS = [
    dict(name="base", E=384, p=0.5, epochs=15),
    dict(name="var05", E=384, p=0.5, var=True, epochs=15),
    dict(name="tok01", E=384, p=0.5, tokdrop=0.1, epochs=15),
    dict(name="wd01", E=384, p=0.5, wd=0.01, epochs=15),
    dict(name="wd05", E=384, p=0.5, wd=0.05, epochs=15),
    dict(name="vartok", E=384, p=0.5, var=True, tokdrop=0.1, epochs=15),
    dict(name="e416", E=416, p=0.5, epochs=15),
    dict(name="seq128", E=384, p=0.5, seq=128, epochs=15),
    dict(name="d055tok", E=384, p=0.55, tokdrop=0.1, epochs=15),
    dict(name="h384", E=384, H=384, p=0.4, epochs=15),
    dict(name="e384d05x40", E=384, p=0.5, epochs=40),
    dict(name="e512d05", E=512, p=0.5, epochs=14),
    dict(name="e512d05x40", E=512, p=0.5, epochs=40),
    dict(name="e384d04", E=384, p=0.4, epochs=15),
    dict(name="e384d06", E=384, p=0.6, epochs=15),
    dict(name="gru384", E=384, p=0.5, epochs=15, cell="gru"),
    dict(name="lstm384", E=384, p=0.5, epochs=15, cell="lstm"),
    dict(name="e384d05", E=384, p=0.5, epochs=15),
    dict(name="pilot", p=0.3, epochs=22),
    dict(name="d04", p=0.4, epochs=22),
    dict(name="d05", p=0.5, epochs=22),
    dict(name="d06", p=0.6, epochs=22),
    dict(name="h768d05", H=768, p=0.5, epochs=19),
    dict(name="h1024d05", H=1024, p=0.5, epochs=16),
    dict(name="h1024d06", H=1024, p=0.6, epochs=16),
    dict(name="e384d05", E=384, p=0.5, epochs=15),
    dict(name="e192d04", E=192, p=0.4, epochs=28),
    dict(name="h768d06", H=768, p=0.6, epochs=19),
    dict(name="l2d05", L=2, p=0.5, epochs=19),
    dict(name="d05seq32", p=0.5, seq=32, epochs=22),
    dict(name="d05lr3", p=0.5, lr=3e-3, epochs=22),
    dict(name="d05b128lr3", p=0.5, B=128, lr=3e-3, epochs=22),
]
only = sys.argv[1:]
for c in CONFIGS:
    if not only or c["name"] in only:
        run(**c)
