"""The network laid out for one-token steps of many rows at once, each row's numbers independent of the batch."""
from __future__ import annotations

import threading
from collections import OrderedDict

import torch
from torch import nn

from ..model import PoetryLSTM


def _mm(bias: torch.Tensor | None, x: torch.Tensor, weight_t: torch.Tensor) -> torch.Tensor:
    """bias + x @ weight_t, each row multiplied on its own, so that its result is the same in any batch.

    BLAS picks its kernel by the number of rows M, and kernels round differently: in MKL, on every
    instruction set it dispatches to (AVX-512, AVX2, SSE4.2), M = 1 takes a matrix-vector kernel,
    M = 2-3 and the last M % 4 rows of a larger batch small kernels whose bits depend on the row's
    position, the rest 4-row blocks. Multiplying every row alone gives it the same call, shape and
    kernel whatever else is decoded, on any BLAS: a request decodes to the same poem alone or
    batched with others. It is also the cheapest shape for one row, the common case (a 4-row
    block costs 3-4x a single row here); a batch of 16 pays about 1.6x a single 16-row product."""
    if x.shape[0] == 1:
        return torch.mm(x, weight_t) if bias is None else torch.addmm(bias, x, weight_t)
    per_row = bias is not None and bias.dim() == 2  # the first layer's bias is a looked-up row per token
    return torch.cat([_mm(bias[i:i + 1] if per_row else bias, x[i:i + 1], weight_t) for i in range(x.shape[0])])


def _lstm_gates(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """New (h, c) from an LSTM layer's pre-activation gates (B, 4H) in PyTorch's i, f, g, o order."""
    hidden = c.shape[-1]
    act = torch.sigmoid(gates)
    c = torch.addcmul(act[:, hidden:2 * hidden] * c, act[:, :hidden], torch.tanh(gates[:, 2 * hidden:3 * hidden]))
    return act[:, 3 * hidden:] * torch.tanh(c), c


class Stepper:
    """The network laid out for one-token steps of many rows at once (inference only).

    nn.LSTM and the output layer cost more in per-call setup than in arithmetic for one token, so
    the weights are copied once into the shapes the steps need: the embedding and the first
    layer's input weights (and both biases) become one (V, 4H) table, so the first layer's input
    product is a row lookup; the other layers take [x, h] times one fused (2H, 4H) matrix; the
    output layer gives full log-probabilities (an adaptive softmax head is expanded to every token).
    The copies are made on first use and again when the parameters are replaced or moved (their
    storage or device changes); after changing weights in place (an optimizer step, a
    load_state_dict), call `refresh()`. Prefills (the context before the poem) are cached, since
    most requests start alike."""

    PREFILL_CACHE = 64

    def __init__(self, model: PoetryLSTM):
        self.model = model
        self._key: tuple | None = None
        self._prefills: OrderedDict[tuple[int, ...], tuple] = OrderedDict()
        self._lock = threading.RLock()

    def refresh(self) -> None:
        """Forget the step weights and prefills: the next use rebuilds them from the model's parameters."""
        with self._lock:
            self._key = None

    def sync(self) -> "Stepper":
        """Build the step weights if not built yet, or if the parameters were replaced or moved since."""
        key = tuple((p.data_ptr(), p.device) for p in self.model.parameters())
        if key != self._key:
            with self._lock, torch.inference_mode():
                if key != self._key:
                    self._build()
                    self._prefills.clear()
                    self._key = key
        return self

    def _build(self) -> None:
        model, lstm = self.model, self.model.lstm
        f32 = lambda t: t.detach().float()  # noqa: E731

        def weights(k: int):
            return [f32(getattr(lstm, f"{w}_l{k}")) for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

        w_ih, w_hh, b_ih, b_hh = weights(0)
        self.table = torch.addmm(b_ih + b_hh, f32(model.embedding.weight), w_ih.t())  # (V, 4H)
        self.w_hh0 = w_hh.t().contiguous()
        self.upper = []
        for k in range(1, lstm.num_layers):
            w_ih, w_hh, b_ih, b_hh = weights(k)
            self.upper.append((b_ih + b_hh, torch.cat([w_ih, w_hh], 1).t().contiguous()))
        self.proj = f32(model.proj.weight).t().contiguous() if model.proj is not None else None
        head = model.head
        if isinstance(head, nn.Linear):
            self.adaptive = None
            self.head_w, self.head_b = f32(head.weight).t().contiguous(), f32(head.bias)
        else:
            self.head_w = f32(head.head.weight).t().contiguous()
            self.head_b = f32(head.head.bias) if head.head.bias is not None else None
            bounds = list(zip(head.cutoffs, head.cutoffs[1:]))
            self.adaptive = (head.shortlist_size, head.n_classes,
                             [(lo, hi, f32(t[0].weight).t().contiguous(), f32(t[1].weight).t().contiguous())
                              for (lo, hi), t in zip(bounds, head.tail)])

    # -- steps ------------------------------------------------------------------------------------

    def prefill(self, ids: list[int], batch: int = 1, device: torch.device | str | None = None):
        """Features after the whole context, and the LSTM state, repeated for `batch` rows.

        Runs nn.LSTM over the context (one row, so the same bits whatever else is being decoded)."""
        self.sync()
        key = tuple(ids)
        with self._lock:  # requests may be decoded from several threads (Batcher and direct calls)
            hit = self._prefills.get(key)
            if hit is None:
                dev = next(self.model.parameters()).device if device is None else torch.device(device)
                with torch.inference_mode():
                    out, (h, c) = self.model.features(torch.tensor([ids], device=dev))
                    hit = (out[:, -1].float(), [(h[k].float(), c[k].float()) for k in range(len(h))])
                self._prefills[key] = hit
                if len(self._prefills) > self.PREFILL_CACHE:
                    self._prefills.popitem(last=False)
            else:
                self._prefills.move_to_end(key)
        feats, state = hit
        return feats.expand(batch, -1), [(h.expand(batch, -1), c.expand(batch, -1)) for h, c in state]

    def step(self, tokens: torch.Tensor, state: list) -> tuple[torch.Tensor, list]:
        """Features (B, D) after feeding one token per row, and the new state."""
        (h, c), new = state[0], []
        h, c = _lstm_gates(_mm(self.table.index_select(0, tokens), h, self.w_hh0), c)
        new.append((h, c))
        for (bias, w), (h_k, c_k) in zip(self.upper, state[1:]):
            h, c = _lstm_gates(_mm(bias, torch.cat([h, h_k], 1), w), c_k)
            new.append((h, c))
        return (h if self.proj is None else _mm(None, h, self.proj)), new

    def log_probs(self, feats: torch.Tensor) -> torch.Tensor:
        """Next-token log-probabilities (B, V) for features (B, D)."""
        head = torch.log_softmax(_mm(self.head_b, feats, self.head_w), -1)
        if self.adaptive is None:
            return head
        shortlist, n_classes, tails = self.adaptive
        out = feats.new_empty((feats.shape[0], n_classes))
        out[:, :shortlist] = head[:, :shortlist]
        for i, (lo, hi, w1, w2) in enumerate(tails):
            cluster = torch.log_softmax(_mm(None, _mm(None, feats, w1), w2), -1)
            torch.add(cluster, head[:, shortlist + i:shortlist + i + 1], out=out[:, lo:hi])
        return out
