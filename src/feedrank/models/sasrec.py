"""SASRec (Kang & McAuley 2018, "Self-Attentive Sequential Recommendation"): a causal
transformer over each user's engaged items in time order predicts the next item.

The layout is the paper's: item embeddings (scaled by sqrt(dim)) plus learned positions (counted
from the newest item, always in the last slot), `n_blocks` pre-norm blocks of single-head causal
self-attention and a ReLU feed-forward, a final layer norm; an item's score is the last
position's state dotted with the item's embedding (shared input/output embeddings). Trained
with cross-entropy over the whole catalogue at every position (the full-softmax variant, which
ranks better than the paper's one sampled negative and costs little on CPU at these sizes),
Adam, dropout. Early stopping on validation: each user's last engaged item is held out of
training and the epoch with the best NDCG@10 on them is kept (`patience` epochs without gain
stop it). Deterministic with a seed (torch on one thread, its RNG forked and seeded).

torch is needed to fit only: the weights are plain arrays (arrays.npz, no pickle) and serving
runs the same forward pass in NumPy (`forward`), so a server never imports torch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import polars as pl

from feedrank.exceptions import ConfigError
from feedrank.models.base import Recommender, Scorer
from feedrank.models.matrix import IdMap
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import View

K_VALIDATION = 10
EPS = 1e-5


def sequences(
    events: pl.DataFrame, settings: Settings, types: list[str], items: IdMap, max_len: int
) -> tuple[list[str], np.ndarray]:
    """Users with engaged known items and their last `max_len` item indices + 1, oldest first,
    left-padded with 0 (users x max_len)."""
    ev = events.filter(settings.engaged_expr(types))
    coded = ev.join(
        items.frame.rename({"id": "item_id", "idx": "__i"}), on="item_id", maintain_order="left"
    )
    seqs = (
        coded.sort("user_id", "timestamp", maintain_order=True)
        .group_by("user_id", maintain_order=True)
        .agg(pl.col("__i").tail(max_len) + 1)
    )
    users = seqs["user_id"].to_list()
    out = np.zeros((len(users), max_len), dtype=np.int64)
    lists = seqs["__i"].to_list()
    lengths = np.array([len(x) for x in lists], dtype=np.int64)
    if lists:
        flat = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists])
        rows = np.repeat(np.arange(len(users)), lengths)
        within = np.arange(flat.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out[rows, max_len - np.repeat(lengths, lengths) + within] = flat
    return users, out


# -- the forward pass in NumPy (serving) -----------------------------------------------------------
def _norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * w + b


def forward(W: dict[str, np.ndarray], seq: np.ndarray, n_blocks: int) -> np.ndarray:
    """The last position's state (users x dim) of left-padded item sequences."""
    used = np.flatnonzero((seq > 0).any(axis=0))
    seq = seq[:, used[0] :] if used.size else seq  # padding shared by every row changes nothing
    d = W["items"].shape[1]
    mask = (seq > 0)[..., None]
    x = (W["items"][seq] * np.sqrt(d) + W["positions"][None, -seq.shape[1] :]) * mask
    L = seq.shape[1]
    allowed = np.tril(np.ones((L, L), dtype=bool))[None] & (seq > 0)[:, None, :]
    for b in range(n_blocks):
        p = f"b{b}_"
        h = _norm(x, W[p + "ln1_w"], W[p + "ln1_b"])
        q, k, v = h @ W[p + "wq"], h @ W[p + "wk"], h @ W[p + "wv"]
        s = np.where(allowed, q @ k.transpose(0, 2, 1) / np.sqrt(d), -1e9)
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        a = s / s.sum(axis=-1, keepdims=True)
        x = x + (a @ v) @ W[p + "wo"]
        h = _norm(x, W[p + "ln2_w"], W[p + "ln2_b"])
        x = x + np.maximum(h @ W[p + "w1"] + W[p + "b1"], 0.0) @ W[p + "w2"] + W[p + "b2"]
        x = x * mask
    return _norm(x[:, -1], W["ln_w"], W["ln_b"])


class SASRecRecommender(Recommender):
    kind = "sasrec"

    items_: IdMap
    weights_: dict[str, np.ndarray]  # float32 arrays of the network
    epochs_: int  # the epoch kept (best validation NDCG)
    validation_: list[float]  # validation NDCG@10 per epoch

    def __init__(
        self,
        max_len: int = 50,
        dim: int = 64,
        n_blocks: int = 2,
        dropout: float = 0.2,
        epochs: int = 30,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        patience: int = 3,
        seed: int = 0,
    ) -> None:
        self.max_len = max_len
        self.dim = dim
        self.n_blocks = n_blocks
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.seed = seed

    def _validate(self) -> None:
        for name in ("max_len", "dim", "n_blocks", "epochs", "batch_size", "patience"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be an integer >= 1; got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1); got {self.dropout}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0; got {self.learning_rate}")

    def fit(self, data: SiteData, settings: Settings | None = None) -> Self:
        settings = self._fitted_on(data, settings)
        self._validate()
        try:
            import torch
        except ImportError as e:  # pragma: no cover - the extra is installed in development
            raise ConfigError(
                "the 'sasrec' model needs torch to fit: pip install 'feedrank[neural]'"
            ) from e
        engaged = data.engagements(settings)
        self.items_ = IdMap(engaged["item_id"])
        if not len(self.items_):
            raise ConfigError("sasrec needs engaged items to learn from; got none")
        _, seq = sequences(data.events, settings, data.types, self.items_, int(self.max_len) + 1)
        previous = torch.get_num_threads()
        torch.set_num_threads(1)  # bit for bit the same model from the same data
        try:
            with torch.random.fork_rng():
                torch.manual_seed(int(self.seed))
                self.weights_, self.epochs_, self.validation_ = _train(self, torch, seq)
        finally:
            torch.set_num_threads(previous)
        return self

    def at(self, view: View) -> SASRecScorer:
        return SASRecScorer(self, view)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"epochs_kept": self.epochs_, "validation": self.validation_}, {
            "items": self.items_.to_array(),
            **{f"w__{k}": v for k, v in self.weights_.items()},
        }

    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.items_ = IdMap.from_array(arrays["items"])
        self.weights_ = {k[3:]: v for k, v in arrays.items() if k.startswith("w__")}
        self.epochs_ = int(meta["epochs_kept"])
        self.validation_ = [float(x) for x in meta["validation"]]


def _train(
    m: SASRecRecommender, torch: Any, seq: np.ndarray
) -> tuple[dict[str, np.ndarray], int, list[float]]:
    """Fit on each sequence without its last item; keep the epoch best at ranking that item."""
    F = torch.nn.functional
    n_items, d, L = len(m.items_), int(m.dim), int(m.max_len)
    net = _Net(torch, n_items, d, L, int(m.n_blocks), float(m.dropout))
    opt = torch.optim.Adam(net.parameters(), lr=float(m.learning_rate))
    train_seq = torch.from_numpy(seq[:, :-1])  # inputs ... and targets one step later
    has_val = (seq[:, -1] > 0) & (seq[:, -2] > 0)  # a last item with history before it
    val_in = torch.from_numpy(seq[has_val, :-1])  # the history before the last item
    val_target = torch.from_numpy(seq[has_val, -1])
    history: list[float] = []
    best, best_state, waited = -1.0, net.state_dict(), 0
    for _epoch in range(int(m.epochs)):
        net.train()
        order = torch.randperm(len(train_seq))
        for s in range(0, len(order), int(m.batch_size)):
            batch = _trimmed(train_seq[order[s : s + int(m.batch_size)]])
            inputs, targets = batch[:, :-1], batch[:, 1:]
            inputs = F.pad(inputs, (1, 0))  # length L again
            targets = F.pad(targets, (1, 0))
            logits = net(inputs) @ net.items.weight[1:].T  # (b, L, n_items)
            keep = (targets > 0) & (inputs > 0)
            if not keep.any():
                continue
            loss = F.cross_entropy(logits[keep], targets[keep] - 1)
            opt.zero_grad()
            loss.backward()
            opt.step()
        ndcg = _validation_ndcg(net, torch, val_in, val_target)
        history.append(round(ndcg, 6))
        if ndcg > best:
            best, waited = ndcg, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            waited += 1
            if waited >= int(m.patience):
                break
    return _arrays(best_state, int(m.n_blocks)), int(np.argmax(history)) + 1, history


def _trimmed(batch: Any) -> Any:
    """Without the columns that are padding in every row (positions count from the right)."""
    used = (batch > 0).any(dim=0).nonzero()
    return batch[:, int(used[0]) :] if len(used) else batch


def _validation_ndcg(net: Any, torch: Any, inputs: Any, target: Any) -> float:
    if not len(target):
        return 0.0
    net.eval()
    with torch.no_grad():
        scores = net(inputs)[:, -1] @ net.items.weight[1:].T
        seen = torch.zeros_like(scores, dtype=torch.bool)
        rows = torch.arange(len(inputs))[:, None].expand_as(inputs)
        ok = inputs > 0
        seen[rows[ok], inputs[ok] - 1] = True
        scores[seen] = -torch.inf
        own = scores.gather(1, (target - 1)[:, None])
        rank = (scores > own).sum(dim=1)
        gain = torch.where(rank < K_VALIDATION, 1.0 / torch.log2(rank.double() + 2.0), 0.0)
    return float(gain.mean())


def _arrays(state: dict[str, Any], n_blocks: int) -> dict[str, np.ndarray]:
    """The torch state as the NumPy forward pass reads it (linear maps as x @ W)."""
    out = {
        "items": state["items.weight"],
        "positions": state["positions.weight"],
        "ln_w": state["ln.weight"],
        "ln_b": state["ln.bias"],
    }
    for b in range(n_blocks):
        p = f"blocks.{b}."
        q = f"b{b}_"
        out |= {
            q + "ln1_w": state[p + "ln1.weight"],
            q + "ln1_b": state[p + "ln1.bias"],
            q + "ln2_w": state[p + "ln2.weight"],
            q + "ln2_b": state[p + "ln2.bias"],
            q + "wq": state[p + "q.weight"].T,
            q + "wk": state[p + "k.weight"].T,
            q + "wv": state[p + "v.weight"].T,
            q + "wo": state[p + "o.weight"].T,
            q + "w1": state[p + "ff1.weight"].T,
            q + "b1": state[p + "ff1.bias"],
            q + "w2": state[p + "ff2.weight"].T,
            q + "b2": state[p + "ff2.bias"],
        }
    return {k: np.ascontiguousarray(v.numpy().astype(np.float32)) for k, v in out.items()}


def _Net(torch: Any, n_items: int, d: int, L: int, n_blocks: int, dropout: float) -> Any:
    """The network in torch (built here so the module imports without torch)."""
    nn = torch.nn

    class Block(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d, eps=EPS), nn.LayerNorm(d, eps=EPS)
            self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
            self.ff1, self.ff2 = nn.Linear(d, d), nn.Linear(d, d)
            self.drop = nn.Dropout(dropout)

        def forward(self, x: Any, allowed: Any, mask: Any) -> Any:
            h = self.ln1(x)
            s = (self.q(h) @ self.k(h).transpose(1, 2)) / d**0.5
            a = torch.softmax(s.masked_fill(~allowed, -1e9), dim=-1)
            x = x + self.drop(self.o(a @ self.v(h)))
            h = self.ln2(x)
            x = x + self.drop(self.ff2(self.drop(torch.relu(self.ff1(h)))))
            return x * mask

    class Net(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.items = nn.Embedding(n_items + 1, d, padding_idx=0)
            self.positions = nn.Embedding(L, d)
            self.blocks = nn.ModuleList(Block() for _ in range(n_blocks))
            self.ln = nn.LayerNorm(d, eps=EPS)
            self.drop = nn.Dropout(dropout)
            nn.init.normal_(self.items.weight, std=d**-0.5)
            with torch.no_grad():
                self.items.weight[0].zero_()

        def forward(self, seq: Any) -> Any:
            mask = (seq > 0).unsqueeze(-1).float()
            x = self.items(seq) * d**0.5 + self.positions.weight[None, -seq.shape[1] :]
            x = self.drop(x) * mask
            n = seq.shape[1]
            allowed = torch.tril(torch.ones(n, n, dtype=torch.bool))[None] & (seq > 0)[:, None, :]
            for block in self.blocks:
                x = block(x, allowed, mask)
            return self.ln(x)

    return Net()


class SASRecScorer(Scorer):
    model: SASRecRecommender

    def score_users(
        self, user_ids: Sequence[str], histories: pl.DataFrame, item_ids: np.ndarray
    ) -> np.ndarray:
        m = self.model
        users = list(user_ids)
        known, seq = sequences(histories, self.settings, self.view.types, m.items_, int(m.max_len))
        out = np.full((len(users), len(item_ids)), np.nan)
        if not known:
            return out
        state = forward(m.weights_, seq, int(m.n_blocks))
        scores = state @ m.weights_["items"][1:].T  # known users x model items
        rows = (
            pl.DataFrame({"user_id": users})
            .with_row_index("__r")
            .join(pl.DataFrame({"user_id": known}).with_row_index("__k"), on="user_id")
        )
        cols = m.items_.index(item_ids)
        r, k = rows["__r"].to_numpy(), rows["__k"].to_numpy()
        block = scores[k][:, np.maximum(cols, 0)].astype(np.float64)
        block[:, cols < 0] = np.nan
        out[r] = block
        return out
