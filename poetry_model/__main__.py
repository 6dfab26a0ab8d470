"""Command line: `python -m poetry_model generate ...` writes poems with their prosody and copy reports.

    python -m poetry_model generate --acrostic 春夏秋冬 --form 七绝 --seed 7 -n 5
    python -m poetry_model generate 床前明月光 --form 五绝 --json
    python -m poetry_model generate --theme 秋夜 --form 七律 -n 4
"""
from __future__ import annotations

import argparse
import json
import sys


def _config_arguments(p: argparse.ArgumentParser) -> None:
    """One option per GenerationConfig field, with its default and help (booleans on by default get --no-X)."""
    from .generation.config import GenerationConfig, locked_from_text

    for name in GenerationConfig.names():
        if name == "prompt":
            continue
        default, meta = GenerationConfig.default(name), GenerationConfig.meta(name)
        flags = meta["flags"] or ("--" + name.replace("_", "-"),)
        help_text = meta["help"]
        if isinstance(default, bool):
            p.add_argument(*flags, dest=name, action="store_false" if default else "store_true",
                           help=("turn off: " if default else "turn on: ") + help_text)
            continue
        kind = {"seed": int, "max_length": int, "top_k": int, "breadth": float, "repetition_penalty": float,
                "locked": locked_from_text}.get(name) or type(default)
        if name == "top_k":
            help_text += "; 0 = no limit"
        if name == "max_length":  # None: the library's default
            default = None
        p.add_argument(*flags, dest=name, type=kind, default=default, choices=meta["choices"] if name == "script" else None,
                       help=f"{help_text} (default {GenerationConfig.default(name)!r})")


def add_generate(sub) -> None:
    """The `generate` subcommand and its options (GenerationConfig's fields, with its defaults)."""
    p = sub.add_parser("generate", help="write poems", description="Write poems; the best-scored first.")
    p.add_argument("prompt", nargs="?", default="", help="the poem's beginning, continued by the model")
    _config_arguments(p)
    p.add_argument("--model", default=None, help="model folder or Hub repo id (default: the shipped model)")
    p.add_argument("--corpus", default=None, help="corpus.npz or tang.npz for the full copy report (default: the model folder's corpus.npz)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--json", action="store_true", help="print a JSON list of poems")
    p.set_defaults(run=run_generate)


def generate_kwargs(args: argparse.Namespace) -> dict:
    """Poet.generate keyword arguments from parsed options."""
    from .generation.config import GenerationConfig

    kwargs = {k: getattr(args, k) for k in GenerationConfig.names() if k != "prompt"}
    kwargs["top_k"] = None if args.top_k == 0 else args.top_k
    if args.max_length is None:
        del kwargs["max_length"]
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
    if poem.theme:
        t = poem.theme
        out.append(f"  theme {t['theme']}: keywords {''.join(t['keywords'])}; planned {''.join(t['planned'][:16])}"
                   f"{'…' if len(t['planned']) > 16 else ''}; used {''.join(t['used']) or 'none'}")
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
