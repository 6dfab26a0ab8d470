"""Generation latency on the CPU: one 七律 with every constraint, 16 candidates in one batch, the classic loop.

    python benchmarks/generate_latency.py [--data data/tang.npz] [--runs 30] [--model checkpoints/tang-lstm]

The model has the classic size (embedding 128, hidden 256, 2 layers, the tang.npz vocabulary of
~8.9k tokens) with random weights: speed does not depend on training. `--model` measures a
trained folder instead (the shipped one: embedding 256, hidden 384, adaptive softmax); the classic
loop then runs on that model's own forward (full output layer every step). "All constraints" means
form 七律 with hard rhyme and tone masks, the repetition guard and the corpus-line copy guard
(the line-hash index a shipped model folder carries). The classic loop is the PyTorch book's
chapter 9 `generate()`: a seq-first model, one full forward of batch 1 per character, greedy
`topk(1)`, autograd left on, here given a whole 七律 as start words: 65 forward passes. It runs with torch's
default thread count (as the book does) and with one thread (as the engine does); the speed-up
compares against the faster of the two.

References measured in the same run, so that figures from a busy machine read as ratios:
the bare model steps (the 65 LSTM steps of a 七律 and the output layer of its 56 sampled
characters, the engine's own step code, nothing else), and the classic loop. Also shown: 16
one-candidate requests decoded together (`generate_many`, what the app's batcher does), per request.

One poem at a time is a chain of matrix-vector products: every step reads every weight it uses
from memory once (the fp32 weights are ~12 MB, far beyond a 2 MB L2), so its time is set by
memory bandwidth, not arithmetic. The last lines give the megabytes of weights each approach
reads per 七律 and the bandwidth the bare steps reach: an exact fp32 engine cannot beat the
classic loop by more than the ratio of those megabytes plus the classic loop's own overheads.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from classic_book import ClassicPoetryModel  # noqa: E402

from poetry_model.corpus_index import CorpusIndex  # noqa: E402
from poetry_model.data import load_npz  # noqa: E402
from poetry_model.generation import (  # noqa: E402
    Poet,
    stepper,  # noqa: E402
    torch_threads,
)
from poetry_model.model import PoetryConfig, PoetryLSTM  # noqa: E402
from poetry_model.novelty import LineIndex, copy_report  # noqa: E402

QILV_TOKENS = 8 * 8 + 1  # 8 lines of 7 characters and a punctuation mark, then <EOP>
# The classic loop's start words: it feeds them one forward pass each, then decodes greedily, so a
# full 七律 (杜甫《登高》) makes it run exactly QILV_TOKENS passes, whether or not its model would
# have stopped early (a trained model emits <EOP> after a short poem when decoding from nothing).
QILV_TEXT = "风急天高猿啸哀，渚清沙白鸟飞回。无边落木萧萧下，不尽长江滚滚来。万里悲秋常作客，百年多病独登台。艰难苦恨繁霜鬓，潦倒新停浊酒杯。"
QILV_SAMPLED = 8 * 7    # the characters: punctuation and <EOP> are forced, the model is not asked
TARGET_ONE_MS, TARGET_MANY_MS, TARGET_SPEEDUP = 10.0, 40.0, 5.0


def classic_sharing(model: PoetryLSTM) -> ClassicPoetryModel:
    """The classic model with the same weights as ours."""
    cfg = model.config
    classic = ClassicPoetryModel(cfg.vocab_size, cfg.embedding_dim, cfg.hidden_dim)
    classic.embeddings.load_state_dict(model.embedding.state_dict())
    classic.lstm.load_state_dict(model.lstm.state_dict())  # same parameters; only batch_first differs
    classic.linear1.load_state_dict(model.head.state_dict())
    return classic


def classic_generate(model, start_words, ix2word, word2ix, max_gen_len, prefix_words=None):
    """The book's generate(), unchanged but for max_gen_len being an argument."""
    results = list(start_words)
    start_word_len = len(start_words)
    input = torch.Tensor([word2ix["<START>"]]).view(1, 1).long()
    hidden = None
    if prefix_words:
        for word in prefix_words:
            output, hidden = model(input, hidden)
            input = input.data.new([word2ix[word]]).view(1, 1)
    for i in range(max_gen_len):
        output, hidden = model(input, hidden)
        if i < start_word_len:
            w = results[i]
            input = input.data.new([word2ix[w]]).view(1, 1)
        else:
            top_index = output.data[0].topk(1)[1][0].item()
            w = ix2word[top_index]
            results.append(w)
            input = input.data.new([top_index]).view(1, 1)
        if w == "<EOP>":
            del results[-1]
            break
    return results


def batch_product(bias: torch.Tensor | None, x: torch.Tensor, weight_t: torch.Tensor) -> torch.Tensor:
    """One BLAS product for all rows of a batch: the reference for the engine's row-by-row products."""
    return torch.mm(x, weight_t) if bias is None else torch.addmm(bias, x, weight_t)


def bare_steps(poet: Poet, batch: int) -> None:
    """A 七律's 65 LSTM steps and the output layer of its 56 sampled characters, nothing else."""
    with torch.inference_mode(), torch_threads(poet.threads):
        feats, state = poet.stepper.prefill([poet.vocab.start_id], batch, poet.device)
        tokens = torch.zeros(batch, dtype=torch.long)
        for step in range(QILV_TOKENS):
            if step % 8 != 7 and step < QILV_SAMPLED + 8:
                poet.stepper.log_probs(feats)
            feats, state = poet.stepper.step(tokens, state)


def weight_megabytes(poet: Poet) -> tuple[float, float]:
    """Megabytes of fp32 weights one 七律 reads: the engine's steps, and the classic loop's."""
    net = poet.stepper.sync()
    size = lambda tensors: sum(t.numel() * 4 for t in tensors) / 2**20  # noqa: E731
    step = size([net.w_hh0] + [w for _, w in net.upper] + ([net.proj] if net.proj is not None else []))
    head = size([net.head_w] + [w for tail in (net.adaptive[2] if net.adaptive else []) for w in tail[2:]])
    classic = size(p for name, p in poet.model.named_parameters() if not name.startswith("embedding"))
    return step * QILV_TOKENS + head * QILV_SAMPLED, classic * QILV_TOKENS


def timed(fn, runs: int) -> list[float]:
    """Wall-clock milliseconds of each call (after one warm-up call)."""
    fn(0)
    out = []
    for i in range(runs):
        t = time.perf_counter()
        fn(i + 1)
        out.append((time.perf_counter() - t) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def report(name: str, values: list[float]) -> float:
    p50, p95 = statistics.median(values), pct(values, 95)
    print(f"{name:<44} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms   ({len(values)} runs)")
    return p50


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "data" / "tang.npz",
                        help="tang.npz: the vocabulary and the corpus lines")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--model", type=Path, default=None,
                        help="a trained model folder (default: the classic size with random weights)")
    args = parser.parse_args(argv)

    dataset = load_npz(args.data)
    torch.manual_seed(0)
    if args.model is None:
        model = PoetryLSTM(PoetryConfig.for_vocab(dataset.vocab))  # classic size, random weights
        model.vocab = dataset.vocab
    else:
        model = PoetryLSTM.from_pretrained(args.model)
        # A model that takes titles appends <TITLE_END> (Vocab.extended): the data's ids keep their meaning.
        if model.vocab.tokens[:len(dataset.vocab)] != dataset.vocab.tokens:
            parser.error(f"{args.model} has another vocabulary than {args.data}")
    cfg = model.config
    corpus = CorpusIndex.for_npz(args.data)
    poet = Poet(model, "cpu", lines=LineIndex(corpus.line_hashes))
    poet.form_masks()  # built once per process, like the app does at start-up
    head = f"adaptive softmax {list(cfg.softmax_cutoffs)}" if cfg.softmax_cutoffs else "full softmax"
    print(f"model: {args.model.name if args.model else 'classic size, random weights'}: vocab {cfg.vocab_size}, "
          f"embedding {cfg.embedding_dim}, hidden {cfg.hidden_dim}, {cfg.num_layers} layers, {head}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} default threads; engine uses {poet.threads}")

    one = report("engine: one 七律, all constraints", timed(lambda s: poet.generate(form="七律", seed=s), args.runs))
    acro = report("engine: one 七律 acrostic, all constraints",
                  timed(lambda s: poet.generate(acrostic="春夏秋冬花鸟风月", form="七律", seed=s), args.runs))
    many = report("engine: 16 七律 candidates in one batch",
                  timed(lambda s: poet.generate(form="七律", num_candidates=16, seed=s), max(5, args.runs // 3)))
    batched = [t / 16 for t in timed(lambda s: poet.generate_many([dict(form="七律", seed=16 * s + k)
                                                                    for k in range(16)]), max(5, args.runs // 3))]
    report("engine: 16 七律 requests together, per request", batched)
    floor = report("floor: bare model steps of one 七律", timed(lambda s: bare_steps(poet, 1), args.runs))
    floor16 = report("floor: bare model steps, batch of 16",
                     timed(lambda s: bare_steps(poet, 16), max(5, args.runs // 3)))
    # The price of batch invariance: the engine multiplies every row on its own, so that each gets the
    # same BLAS kernel in any batch. The reference multiplies a batch's rows in one product (whose
    # bits then depend on the batch).
    rowwise, stepper._mm = stepper._mm, batch_product
    try:
        one_batched = report("  the same one 七律, one product per batch", timed(lambda s: poet.generate(form="七律", seed=s),
                                                                             args.runs))
        floor16_batched = report("  the same bare steps of 16, one product", timed(lambda s: bare_steps(poet, 16),
                                                                                 max(5, args.runs // 3)))
    finally:
        stepper._mm = rowwise
    text = poet.generate(form="七律", seed=1)[0].text
    report("full copy report, one poem (optional index)",
           timed(lambda s: copy_report(text, poet.lines, corpus, "simplified", "simplified"), args.runs))

    # The book's model class where ours has its shape; a trained folder runs the same loop on its own forward.
    classic = classic_sharing(model) if args.model is None else model
    ix2word, word2ix = dict(enumerate(dataset.vocab.tokens)), dataset.vocab.index
    assert len(QILV_TEXT) == QILV_TOKENS - 1
    loop = lambda s: classic_generate(classic, QILV_TEXT, ix2word, word2ix, QILV_TOKENS)  # noqa: E731
    classic_default = report(f"classic loop, {torch.get_num_threads()} threads (book)", timed(loop, args.runs))
    with torch_threads(1):
        classic_one = report("classic loop, 1 thread", timed(loop, args.runs))
    best_classic = min(classic_default, classic_one)
    engine_mb, classic_mb = weight_megabytes(poet)
    print(f"\nratios (same run): one 七律 = {one / floor:.2f}x its bare model steps; 16 candidates = "
          f"{many / one:.1f}x one poem, {many / floor16:.2f}x their bare steps; 16 requests together = "
          f"{statistics.median(batched) / one:.2f}x one poem each; acrostic 七律 {best_classic / acro:.1f}x faster "
          f"than classic")
    print(f"batch invariance (every row multiplied on its own): one 七律 {one / one_batched:.2f}x, bare steps of "
          f"16 rows {floor16 / floor16_batched:.2f}x one product per batch")
    print(f"memory: a 七律 reads {engine_mb:.0f} MB of weights here, {classic_mb:.0f} MB in the classic loop; the "
          f"bare steps stream them at {engine_mb / floor:.1f} GB/s")
    verdict = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    print(f"targets: one 七律 <= {TARGET_ONE_MS:g} ms: {verdict(one <= TARGET_ONE_MS)} (p50 {one:.1f}); "
          f"16 candidates <= {TARGET_MANY_MS:g} ms: {verdict(many <= TARGET_MANY_MS)} (p50 {many:.1f}); "
          f">= {TARGET_SPEEDUP:g}x the classic loop: {verdict(best_classic / one >= TARGET_SPEEDUP)} "
          f"({best_classic / one:.1f}x)")
    print(f"speed-up of one constrained 七律 over the classic loop: {best_classic / one:.1f}x")

if __name__ == "__main__":
    main()
