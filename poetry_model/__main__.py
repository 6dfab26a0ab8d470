"""Command line: `python -m poetry_model generate ...` writes poems with their prosody and copy reports.

    python -m poetry_model generate --acrostic 春夏秋冬 --form 七绝 --seed 7 -n 5
    python -m poetry_model generate 床前明月光 --form 五绝 --json
"""
from __future__ import annotations

import argparse
import json
import sys


def add_generate(sub) -> None:
    """The `generate` subcommand and its options (defaults are those of Poet.generate)."""
    p = sub.add_parser("generate", help="write poems", description="Write poems; the best-scored first.")
    p.add_argument("prompt", nargs="?", default="", help="the poem's beginning, continued by the model")
    p.add_argument("--acrostic", default="", help="藏头: one head character per line (punctuation ignored)")
    p.add_argument("--form", default="free", help="free, 五绝, 七绝, 五律, 七律, or 五言/七言 (length by acrostic)")
    p.add_argument("--no-rhyme", dest="rhyme", action="store_false", help="no rhyme constraint")
    p.add_argument("--no-tones", dest="tones", action="store_false", help="no tone (平仄) constraint")
    p.add_argument("--rhyme-strength", type=float, default=1.0, help="0..1, 1 = hard mask (default)")
    p.add_argument("--tone-strength", type=float, default=1.0, help="0..1, 1 = hard mask (default)")
    p.add_argument("-t", "--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=50, help="0 = no limit")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="nats per earlier use of a character")
    p.add_argument("--style", default="", help="text fed first to set the mood (not printed)")
    p.add_argument("-n", "--num-candidates", type=int, default=1)
    p.add_argument("--seed", type=int, default=None, help="default: drawn, and printed")
    p.add_argument("--max-length", type=int, default=None, help="characters of a free-verse poem")
    p.add_argument("--script", default="auto", choices=["auto", "simplified", "traditional"])
    p.add_argument("--allow-copies", dest="avoid_copies", action="store_false",
                   help="let lines equal corpus lines")
    p.add_argument("--model", default=None, help="model folder or Hub repo id (default: the shipped model)")
    p.add_argument("--corpus", default=None, help="corpus.npz or tang.npz for the full copy report (default: the model folder's corpus.npz)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--json", action="store_true", help="print a JSON list of poems")
    p.set_defaults(run=run_generate)


def generate_kwargs(args: argparse.Namespace) -> dict:
    """Poet.generate keyword arguments from parsed options."""
    kwargs = {k: getattr(args, k) for k in (
        "acrostic", "form", "rhyme", "tones", "rhyme_strength", "tone_strength", "temperature", "top_p",
        "repetition_penalty", "style", "num_candidates", "seed", "script", "avoid_copies")}
    kwargs["top_k"] = None if args.top_k == 0 else args.top_k
    if args.max_length is not None:
        kwargs["max_length"] = args.max_length
    return kwargs


def format_poem(poem) -> str:
    """A poem for the terminal: rank and score parts, its lines, the prosody report and the copy report."""
    from .prosody import format_report

    parts = ", ".join(f"{k} {v:+.3f}" for k, v in poem.score_parts.items())
    out = [f"#{poem.rank}  score {poem.score:+.3f} ({parts})  seed {poem.seed} candidate {poem.candidate}"]
    out += ["  " + line for line in poem.lines]
    if poem.report is not None:
        out += ["  " + line for line in format_report(poem.report).splitlines()]
    out.append("  " + describe_copy(poem.copy))
    out += [f"  ~ {note}" for note in poem.relaxations]
    return "\n".join(out)


def describe_copy(copy: dict) -> str:
    """One line about what the poem shares with the corpus."""
    text = f"copy check: {copy['checked']}"
    if copy["copied_lines"]:
        text += f"; lines found in the corpus: {'、'.join(copy['copied_lines'])}"
    if copy.get("avoided"):
        text += f"; {copy['avoided']} corpus line(s) avoided"
    if copy["longest_span"]:
        src = copy["span_poem"]
        text += (f"; longest shared span 「{copy['longest_span']}」 ({copy['longest_span_chars']} characters, "
                 f"《{src['title']}》 {src['author']})")
    if copy["nearest"]:
        near = copy["nearest"]
        text += f"; nearest 《{near['title']}》 {near['author']} (similarity {copy['similarity']:.2f})"
    return text + (f"; {copy['note']}" if copy["note"] else "")


def run_generate(args: argparse.Namespace) -> int:
    from .generation import MODEL_CORPUS, load

    poet = load(args.model, device=args.device, corpus=args.corpus or MODEL_CORPUS)
    poems = poet.generate(args.prompt, **generate_kwargs(args))
    if args.json:
        print(json.dumps([p.to_dict() for p in poems], ensure_ascii=False, indent=1))
    else:
        print("\n\n".join(format_poem(p) for p in poems))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m poetry_model", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_generate(sub)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as e:  # bad arguments, unknown characters, a missing or broken model
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
