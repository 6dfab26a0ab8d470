"""Top-k / top-p sampling of many rows at once, each request's rows from its own generator.

Hand-written rather than torch.multinomial or transformers' warpers for three reasons: one call
samples the rows of several requests, each consuming its own torch.Generator as that request alone
would (one uniform per row, so a seed gives the same poem alone or batched); no operation here
mixes rows, so a row's token never depends on the batch around it; and top-p sorts only the head
of each row that holds its nucleus, not the whole vocabulary (the sort was most of a sampled step).
"""
from __future__ import annotations

import math

import numpy as np
import torch

NUCLEUS_HEADS = (256, 1024, 3072)  # top-p sorts the shortest of these heads that holds its nucleus, else all
# A head is tried only when it is this many times the rows' largest perplexity: a 0.95 nucleus of the
# shipped model held 2.4x its row's perplexity at the median (up to 25x), so shorter heads rarely
# hold it; random weights (perplexity ~ the vocabulary) go straight to the whole row.
NUCLEUS_PER_PERPLEXITY = 1


def _largest(scores: torch.Tensor, k: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest scores of each row and their ids, largest first (k None: every score, sorted).

    On the CPU numpy's introselect and sort are 2-7x faster than torch.topk and torch.sort; equal
    scores may come in another order, which no draw can tell apart (only -inf ever ties)."""
    if scores.device.type != "cpu":
        return scores.topk(k, -1) if k is not None else scores.sort(-1, descending=True)
    neg = -scores.numpy()  # smallest first: masked tokens (+inf here) pile up where introselect never looks
    if k is None:
        ids = np.argsort(neg, axis=-1, kind="stable")
    else:
        ids = np.argpartition(neg, k - 1, axis=-1)[:, :k]
        ids = np.take_along_axis(ids, np.argsort(np.take_along_axis(neg, ids, -1), axis=-1, kind="stable"), -1)
    ids = torch.from_numpy(ids)
    return scores.gather(-1, ids), ids


def _sorted_head(logits: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's largest logits, sorted: the shortest head of NUCLEUS_HEADS, at least the rows' perplexity
    long, that holds top_p of every row's mass (the nucleus then lies inside it: the same tokens as
    sorting the whole row), else whole rows. Sorting a whole ~9k vocabulary took most of a sampled step."""
    log_probs = logits - torch.logsumexp(logits, -1, keepdim=True)
    perplexity = float(torch.exp(-(log_probs.exp() * log_probs).nansum(-1)).max())  # cut tokens: 0 * -inf
    for k in NUCLEUS_HEADS:
        if k < logits.shape[-1] and k >= NUCLEUS_PER_PERPLEXITY * perplexity:
            head, ids = _largest(logits, k)
            if bool((torch.logsumexp(log_probs.gather(-1, ids), -1) >= math.log(top_p) + 1e-5).all()):
                return head, ids
    return _largest(logits, None)


def truncated(scores: torch.Tensor, temperature: float, top_k: int | None,
              top_p: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The logits a draw picks from, after temperature, top-k and top-p (cut ones -inf), and their token
    ids (None: the logits are the whole row in vocabulary order)."""
    ids = None
    if top_k is not None and top_k < scores.shape[-1]:
        logits, ids = _largest(scores, top_k)
        logits = pool = logits / temperature  # top-p's mass: within the top k
    elif top_p < 1:
        pool = scores / temperature           # top-p's mass: over the whole row, sorted or not
        logits, ids = _sorted_head(pool, top_p)
    else:
        logits = scores / temperature
    if top_p < 1:
        probs = torch.exp(logits - torch.logsumexp(pool, -1, keepdim=True))
        # Keep the smallest head of the sorted list whose mass reaches top_p (the first always stays).
        logits = logits.masked_fill(probs.cumsum(-1) - probs >= top_p, -math.inf)
    return logits, ids


def sample(scores: torch.Tensor, temperature: float, top_k: int | None, top_p: float,
           generator: torch.Generator | list[tuple[torch.Generator, int, int]]) -> torch.Tensor:
    """One token per row of (n, V) scores: greedy at temperature 0, else top-k, then top-p, then a draw.

    `generator` draws for every row, or is a list of (generator, first row, end row): rows of
    several requests sampled together, each request with its own generator. The draw is an inverse-CDF
    draw (one uniform per row over the cumulative probabilities of the kept tokens, largest first), done
    here so that one call serves many requests and a request's rows consume its generator the same way
    alone or batched."""
    if temperature == 0:
        return scores.argmax(-1)
    logits, ids = truncated(scores, temperature, top_k, top_p)
    cdf = torch.softmax(logits, -1).cumsum_(-1)
    # One uniform per row, drawn from its request's generator: the draw never depends on how many
    # tokens were sorted or on the rows around it. It picks the first position whose cdf exceeds
    # u * total (kept below the total): never a cut token, whose cdf equals the one before it.
    # The uniforms are drawn on the generators' device (the poet's, one for all), then moved to the scores'.
    spans = [(generator, 0, len(cdf))] if isinstance(generator, torch.Generator) else generator
    u = torch.empty(len(cdf), 1, device=spans[0][0].device)
    for gen, lo, hi in spans:
        u[lo:hi].uniform_(generator=gen)
    u = u.to(cdf.device)
    total = cdf[:, -1:]
    pick = torch.searchsorted(cdf, torch.minimum(u * total, torch.nextafter(total, total.new_zeros(()))), right=True)
    return (ids.gather(-1, pick) if ids is not None else pick).squeeze(-1)
