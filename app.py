"""Gradio app (and Hugging Face Space) for the Tang poetry generator.

    python app.py                                 # the shipped model at http://127.0.0.1:7860
    python app.py --model runs/mine/best          # another folder, or a Hub repo id ("user/tang-lstm")
    MODEL_ID=user/tang-lstm GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=8080 python app.py

Only UI wiring lives here: generation, prosody and copy checks are `poetry_model`'s. The same
request runs behind the page's button and behind the JSON endpoint `/generate`:

    from gradio_client import Client
    poems = Client("http://127.0.0.1:7860/").predict(acrostic="春夏秋冬", form="七绝", seed=7, api_name="/generate")

Writing with the poet: the page streams lines as they are decoded, locks edited or ticked lines
and regenerates the rest (`/generate`'s `locked`), lists a clicked character's alternatives
(`/alternatives`) and puts one in (`/replace`); `/card` draws a poem as a PNG; the address bar's
query string holds the settings and seed of the poem shown (a permalink). The parts are in ui/:
request checking and error messages, permalinks, writing with the poet, HTML, the card, the server.

Every user-derived text that reaches the page is HTML-escaped; bad input becomes a gr.Error
with the library's message, never a stack trace, and the server keeps serving.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no calls home
# Gradio's queue rebuilds a pandas summary of up to 10,000 past events after every event (for its
# monitoring page): several ms of CPU per request at load. Every 100 events over the last 1,000 is plenty.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "100")
os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1000")

STARTED = time.perf_counter()  # start-up is timed from here: the model loads while gradio is imported

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL_DIR = HERE / "checkpoints" / "tang-lstm"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860

CONCURRENCY = 128             # requests handed to the generator at once; it schedules them (cheapest first)
QUEUE_SIZE = 256              # more requests wait in gradio's queue; beyond that they are refused
MAX_ROWS = 32                 # candidates decoded at once (a step costs ~1 ms per row): 8 kept for light requests
HOLD_S = 10.0                 # how long a request waits for a restarting generator before it is told to retry


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Serve the Tang poetry generator (Gradio).")
    p.add_argument("--model", default=os.environ.get("MODEL_ID") or None,
                   help="model folder or Hub repo id (env MODEL_ID; default: checkpoints/tang-lstm)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME") or DEFAULT_HOST,
                   help="address to bind (env GRADIO_SERVER_NAME; default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT") or DEFAULT_PORT),
                   help="port (env GRADIO_SERVER_PORT; default 7860)")
    p.add_argument("--corpus", default=os.environ.get("POETRY_CORPUS") or None,
                   help="corpus.npz or tang.npz for the copy report's nearest poem (env POETRY_CORPUS; default: the model folder's corpus.npz)")
    p.add_argument("--device", default=None, help="torch device (default: cuda, mps, else cpu)")
    p.add_argument("--concurrency", type=int, default=int(os.environ.get("POET_CONCURRENCY") or CONCURRENCY),
                   help=f"requests generated at once, decoded together in one batch (default {CONCURRENCY})")
    p.add_argument("--threads", type=int, default=int(os.environ.get("POET_THREADS") or 1),
                   help="torch CPU threads per process (default 1: concurrent requests share the cores)")
    return p.parse_args(argv)


def start_generator(args: argparse.Namespace):
    """Start the generator process (it loads the model meanwhile), or exit saying how to get a model."""
    from poetry_model.worker import PoetWorker

    if args.model is None and not (DEFAULT_MODEL_DIR / "config.json").is_file():
        sys.exit(f"error: no model at {DEFAULT_MODEL_DIR}.\n"
                 "Get one: train it (`python -m train.train --data data/tang.npz --out runs/mine`) and run "
                 "`python app.py --model runs/mine/best`, or point MODEL_ID / --model at a Hub repo id.")
    return PoetWorker(args.model if args.model is not None else DEFAULT_MODEL_DIR, device=args.device,
                      corpus=args.corpus, threads=max(1, args.threads), max_rows=MAX_ROWS, hold_s=HOLD_S)


def wait_for_generator(worker, model: str | None):
    """The started generator once its model is loaded, or exit with the reason it could not load."""
    from poetry_model.worker import WorkerError

    try:
        worker.wait_ready()
    except WorkerError as exc:
        worker.close()
        sys.exit(f"error: cannot load model {model or DEFAULT_MODEL_DIR}: {exc}")
    return worker


_early: tuple = ()  # (args, generator) when run as a script
if __name__ == "__main__":
    # `python app.py`: the generator process starts before gradio is imported, so that its torch
    # import and model load (2-3 s) run beside that import instead of after it.
    _args = parse_args()
    _early = _args, start_generator(_args)

import gradio as gr  # noqa: E402

from ui.card import CARD_DOC, card_inputs, make_card  # noqa: E402
from ui.cowrite import (  # noqa: E402
    ALTERNATIVES_DOC,
    PAGE_ALTERNATIVES,
    REPLACE_DOC,
    edit_rows,
    find_alternatives,
    line_and_column,
    replace_char,
)
from ui.permalink import PERMALINK_JS, parse_permalink, permalink_query  # noqa: E402
from ui.render import POEM_CSS, render_partial, render_result, toast_text  # noqa: E402
from ui.request import (  # noqa: E402
    API_DOC,
    APP_MAX_CANDIDATES,
    APP_MAX_TEMPERATURE,
    DEFAULTS,
    FORM_CHOICES,
    MAX_LINES,
    MAX_SEED,
    MAX_TOP_K,
    PAGE_PARAMS,
    SCRIPT_CHOICES,
    failed,
    log,
    request_kwargs,
    result_json,
    run_request,
)
from ui.server import server_app  # noqa: E402

D = DEFAULTS

EXAMPLES = [  # prompt, acrostic, form, style, seed, theme
    ["", "春夏秋冬", "七绝", "", 7, ""],
    ["床前明月光，", "", "五绝", "", 42, ""],
    ["", "", "五律", "", 3, "秋夜"],
    ["", "", "七绝", "", 5, "边塞"],
    ["", "长安月", "自由", "", 11, ""],
    ["", "", "七律", "", 2024, "送友人"],
]

# JS: the best poem's text, one line per line, onto the clipboard (a hidden textarea where the
# Clipboard API is missing).
COPY_JS = """() => {
  const lines = [...document.querySelectorAll('#poems .poem-card:first-child .poem-line')].map(l => l.dataset.text);
  const text = lines.join('\\n');
  if (!text) return [];
  const fallback = () => { const t = document.createElement('textarea'); t.value = text; document.body.appendChild(t);
                           t.select(); document.execCommand('copy'); t.remove(); };
  if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).catch(fallback); else fallback();
  return []; }"""

# JS: a click on a character of the first poem puts its position in the Position box and asks for alternatives.
CLICK_JS = """() => {
  document.addEventListener('click', (e) => {
    const ch = e.target.closest && e.target.closest('#poems .poems:not(.streaming) .poem-card:first-child ruby[data-pos]');
    if (!ch) return;
    document.querySelectorAll('#poems ruby.picked').forEach(r => r.classList.remove('picked'));
    ch.classList.add('picked');
    const box = document.querySelector('#alt_position input');
    box.value = ch.dataset.pos;
    box.dispatchEvent(new Event('input', {bubbles: true}));
    box.dispatchEvent(new Event('change', {bubbles: true}));
    setTimeout(() => document.querySelector('#alt_show').click(), 50);
  });
  return [];
}"""


# ---------------------------------------------------------------------------------------------
# The Blocks


def new_seed() -> int:
    return secrets.randbelow(2**31)


def build_app(generator, *, model_name: str = "", concurrency: int = CONCURRENCY) -> gr.Blocks:
    """The whole UI and the `/generate` API around a generator: a `poetry_model.worker.PoetWorker`
    (what `main` starts), a `Batcher`, or a loaded `Poet` (then wrapped in a Batcher here).

    Concurrent requests (up to `concurrency`) are decoded together: one model step per token for
    all of them, each with its own seed, so every answer is the one the request gives alone."""
    if not hasattr(generator, "submit"):  # a Poet
        from poetry_model.generation import Batcher

        generator = Batcher(generator, max_rows=MAX_ROWS)

    async def generate(prompt: str = D["prompt"], acrostic: str = D["acrostic"], form: str = D["form"],
                       rhyme: bool = D["rhyme"], rhyme_strength: float = D["rhyme_strength"], tones: bool = D["tones"],
                       tone_strength: float = D["tone_strength"], temperature: float = D["temperature"],
                       top_k: int | None = D["top_k"], top_p: float = D["top_p"], style: str = D["style"],
                       num_candidates: int = D["num_candidates"], seed: int | None = D["seed"],
                       script: str = D["script"], theme: str = D["theme"], locked: dict | None = D["locked"],
                       relax_locked: bool = D["relax_locked"]) -> dict:
        return await run_request(generator, dict(
            prompt=prompt, acrostic=acrostic, form=form, rhyme=rhyme, rhyme_strength=rhyme_strength, tones=tones,
            tone_strength=tone_strength, temperature=temperature, top_k=top_k, top_p=top_p, style=style,
            num_candidates=num_candidates, seed=seed, script=script, theme=theme, locked=locked,
            relax_locked=relax_locked))

    generate.__doc__ = API_DOC

    async def alternatives(text: str, position: int, k: int = 5, settings: dict | None = None) -> dict:
        return await find_alternatives(generator, text, position, k, settings)

    alternatives.__doc__ = ALTERNATIVES_DOC

    async def replace(text: str, position: int, char: str, settings: dict | None = None) -> dict:
        return await replace_char(generator, text, position, char, settings)

    replace.__doc__ = REPLACE_DOC

    def page_outputs(result: dict) -> tuple[str, dict]:
        for poem in result["poems"]:
            for note in poem.get("relaxations") or []:
                gr.Warning(toast_text(str(note)))
        asked = result["request"]["num_candidates"]
        if len(result["poems"]) < asked:
            gr.Warning(f"{asked - len(result['poems'])} 首重复已合并 · duplicate candidate(s) merged")
        return render_result(result), result

    async def stream_page(raw: dict[str, Any]):
        """(HTML, JSON) of the poem so far each time a line is decoded, then the ranked poems."""
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue = asyncio.Queue()
        try:
            kwargs = request_kwargs(**raw)
            done = asyncio.wrap_future(generator.submit(
                **kwargs, on_line=lambda event: loop.call_soon_threadsafe(lines.put_nowait, event["lines"])))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message
            raise failed(exc, raw) from None
        while not done.done():
            line = asyncio.ensure_future(lines.get())
            await asyncio.wait({line, done}, return_when=asyncio.FIRST_COMPLETED)
            if line.done():
                yield render_partial(line.result()), gr.update()
            else:
                line.cancel()
        try:
            poems = done.result()
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message
            raise failed(exc, raw) from None
        yield page_outputs(result_json(poems, kwargs, t0))

    async def generate_page(*values):
        async for out in stream_page(dict(zip(PAGE_PARAMS, values))):
            yield out

    async def regenerate_page(*values):
        """Generate again with the ticked or edited lines locked (as they read now), the page's settings and seed."""
        n = len(PAGE_PARAMS)
        page, relax, result, ticks, texts = (values[:n], values[n], values[n + 1], values[-2 * MAX_LINES:-MAX_LINES],
                                             values[-MAX_LINES:])
        shown = (((result or {}).get("poems") or [{}])[0]).get("lines") or []
        edited = [i < len(shown) and (text or "").strip() != shown[i] for i, text in enumerate(texts)]
        locked = {str(i): text for i, (tick, text, changed) in enumerate(zip(ticks, texts, edited))
                  if (tick or changed) and i < len(shown)}
        if not locked:
            gr.Warning("没有锁定的句子 · no line is locked: tick 锁 beside the lines to keep")
        raw = {**dict(zip(PAGE_PARAMS, page)), "locked": locked or None, "relax_locked": relax}
        try:
            async for out in stream_page(raw):
                yield out
        except gr.Error as exc:
            if "relax_locked" in exc.message:
                raise gr.Error(exc.message + " · 勾选「放宽」可保留此句 · tick 'Relax' to keep the line anyway",
                               title=exc.title, print_exception=False) from None
            raise

    async def show_alternatives(result: dict | None, position: Any):
        """The alternatives at a character of the best poem, as choices to pick from."""
        poem = ((result or {}).get("poems") or [None])[0]
        if poem is None:
            raise gr.Error("先作诗 · write a poem first", print_exception=False)
        found = await alternatives(poem["text"], position, PAGE_ALTERNATIVES, result.get("request"))
        line, column = line_and_column(poem["lines"], found["position"])
        choices = [(f"{a['char']}  {100 * a['prob']:.1f}%", a["char"]) for a in found["alternatives"]]
        note = (f"第{line}句第{column}字「{found['char']}」: {len(choices)} 个合律的候选字 · alternative(s) that keep "
                "every rule here (model probability after the rules); pick one and press 换上 Use it")
        return gr.update(choices=choices, value=None), note

    async def apply_alternative(result: dict | None, position: Any, char: str | None):
        poem = ((result or {}).get("poems") or [None])[0]
        if poem is None or not char:
            raise gr.Error("先点一个字，再选候选 · click a character, then pick an alternative", print_exception=False)
        edited = await replace(poem["text"], position, char, result.get("request"))
        kept = edited["edit"] == "kept"
        note = (f"「{toast_text(char)}」 换上 · put in: " + ("保留 kept — every later character still fits the rules"
                if kept else "重写 re-continued — the rest was written again from that character"))
        return (*page_outputs(edited), gr.update(choices=[], value=None), note)

    async def card(text: str, title: str = "", form: str = "", tone_marks: bool = True) -> str:
        return await asyncio.to_thread(make_card, text, title, form, tone_marks)

    card.__doc__ = CARD_DOC

    async def after_generate(result: dict | None, tone_marks: bool):
        """The best poem's card, its text for the card's options, the permalink of the poem (none for a
        hand-kept edit: no settings write it) and its lines in the edit rows."""
        text, title, form, tones, footer = card_inputs(result)
        if not text:
            return [gr.update()] * (5 + 3 * MAX_LINES)
        path = await asyncio.to_thread(make_card, text, title, form, tone_marks, tones, footer)
        link = "" if result.get("edit") == "kept" else permalink_query(result["request"])
        return [text, title, form, gr.update(value=path, interactive=True), link, *edit_rows(result)]

    async def from_permalink(request: gr.Request):
        """Opening the page with settings in its query string: fill them in and write that poem."""
        query = dict(request.query_params) if request is not None else {}
        values, problems = parse_permalink(query)
        for problem in problems:
            gr.Warning(toast_text(f"链接参数有误 · bad link parameter: {problem}; the default is used"))
        if not values:
            return [gr.update() for _ in inputs] + [gr.update(), gr.update()]
        filled = {**DEFAULTS, **values}
        try:
            html, result = page_outputs(await generate(**filled))
        except gr.Error as exc:  # the settings together are refused: the page shows them and says why
            gr.Warning(exc.message)
            html, result = gr.update(), gr.update()
        return [filled[k] for k in PAGE_PARAMS] + [html, result]

    # Cards handed out are copied into gradio's cache; files there older than an hour go, hourly.
    with gr.Blocks(title="唐诗生成器 · Tang poetry generator", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# 唐诗生成器 · Tang poetry generator\n"
                    "字符级 LSTM 按体裁、押韵、平仄作诗。 A character LSTM trained on Tang poems writes verse "
                    "with form, rhyme and tone control; every character is annotated with its tone."
                    + (f"  \nModel: `{model_name.replace('`', '')}`" if model_name else ""))
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                prompt = gr.Textbox(label="开头 Prompt", placeholder="床前明月光，", elem_id="prompt",
                                    info="诗的开头，由模型续写 · the opening, continued by the model")
                acrostic = gr.Textbox(label="藏头 Acrostic", placeholder="春夏秋冬", elem_id="acrostic",
                                      info="每句首字 · one head character per line")
                theme = gr.Textbox(label="主题 Theme", placeholder="秋夜 · 送友人 · 边塞 · 月", elem_id="theme",
                                   info="关键词或题目，全诗围绕它 · keywords or a title the whole poem keeps to")
                form = gr.Radio(FORM_CHOICES, value=D["form"], label="体裁 Form", elem_id="form",
                                info="自由 = free verse; 绝句 4 lines, 律诗 8 lines of 5 or 7 characters")
                with gr.Row():
                    rhyme = gr.Checkbox(D["rhyme"], label="押韵 Rhyme", elem_id="rhyme", info="even lines rhyme", scale=1)
                    rhyme_strength = gr.Slider(0, 1, D["rhyme_strength"], step=0.05, label="押韵强度 Rhyme strength", scale=2,
                                               info="1 = strict, 0 = off", elem_id="rhyme_strength")
                with gr.Row():
                    tones = gr.Checkbox(D["tones"], label="平仄 Tones", elem_id="tones", info="level/oblique pattern",
                                        scale=1)
                    tone_strength = gr.Slider(0, 1, D["tone_strength"], step=0.05, label="平仄强度 Tone strength", scale=2,
                                              info="1 = strict, 0 = off", elem_id="tone_strength")
                with gr.Accordion("采样 Sampling", open=False):
                    temperature = gr.Slider(0, APP_MAX_TEMPERATURE, D["temperature"], step=0.05, label="温度 Temperature",
                                            info="0 = greedy; higher = bolder", elem_id="temperature")
                    top_k = gr.Slider(0, MAX_TOP_K, D["top_k"], step=1, label="Top-k",
                                      info="只从最可能的 k 字中选 · 0 = no limit", elem_id="top_k")
                    top_p = gr.Slider(0.05, 1, D["top_p"], step=0.01, label="Top-p",
                                      info="累计概率截断 · nucleus sampling", elem_id="top_p")
                    style = gr.Textbox(label="风格 Style", placeholder="大漠孤烟直，长河落日圆。", elem_id="style",
                                       info="先读给模型定基调，不输出 · read first to set the mood, not printed")
                num_candidates = gr.Slider(1, APP_MAX_CANDIDATES, D["num_candidates"], step=1, label="候选数 Candidates",
                                           info="写几首，按分数排序 · poems written and ranked", elem_id="num_candidates")
                with gr.Row(equal_height=True):
                    seed = gr.Number(D["seed"], label="随机种子 Seed", precision=0, minimum=-1, maximum=MAX_SEED,
                                     info="-1 = 每次随机 · random each time; the seed used is shown with the poem",
                                     elem_id="seed", scale=3)
                    reseed = gr.Button("新种子 New seed", elem_id="new_seed", scale=1)
                script = gr.Radio(SCRIPT_CHOICES, value=D["script"], label="简/繁 Script", elem_id="script",
                                  info="输出字体 · output script")
                go = gr.Button("作诗 Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=3, min_width=360):
                poems_html = gr.HTML("<div class='poem-empty'>点击「作诗」· press Generate</div>",
                                     css_template=POEM_CSS, elem_id="poems", js_on_load=None)
                with gr.Row():
                    card_download = gr.DownloadButton("下载诗笺 Download card (PNG)", value=None, interactive=False,
                                                      elem_id="card_download")
                    copy_text = gr.Button("复制诗句 Copy text", elem_id="copy_text")
                permalink = gr.Textbox(label="链接参数 Permalink (also in the address bar)", interactive=False,
                                       elem_id="permalink", max_lines=1,
                                       info="打开带此参数的网址即得同一首诗 · the page URL with it gives this poem again")
                with gr.Accordion("同写 Write with the poet", open=True, elem_id="cowrite"):
                    gr.Markdown("点诗中任一字看合律的候选字 · click a character of the first poem for alternatives "
                                "that keep every rule. 改句并锁定，再「重写其余」· edit lines, lock them, and "
                                "regenerate the rest (fixed forms).", elem_id="cowrite_help")
                    with gr.Row(equal_height=True):
                        alt_position = gr.Number(None, label="字位 Position", precision=0, minimum=0, scale=1,
                                                 elem_id="alt_position", info="index in the poem's text")
                        alt_show = gr.Button("候选字 Alternatives", elem_id="alt_show", scale=1)
                    alt_choices = gr.Radio([], label="候选 Alternatives", elem_id="alt_choices")
                    alt_apply = gr.Button("换上 Use it", elem_id="alt_apply")
                    edit_status = gr.Markdown("", elem_id="edit_status")
                    locks, line_boxes, line_rows = [], [], []
                    for i in range(MAX_LINES):
                        with gr.Row(equal_height=True, visible=False) as row:
                            locks.append(gr.Checkbox(False, label=f"锁 {i + 1}", elem_id=f"lock_{i}", scale=0,
                                                     min_width=80, interactive=True))
                            line_boxes.append(gr.Textbox(show_label=False, elem_id=f"line_{i}", max_lines=1,
                                                         scale=4, interactive=True))
                        line_rows.append(row)
                    relax_locked = gr.Checkbox(False, label="放宽 Relax: keep locked lines that break tone or rhyme",
                                               elem_id="relax_locked")
                    gr.Markdown("改过的句子自动锁定 · an edited line is locked too", elem_id="lock_help")
                    regenerate = gr.Button("重写其余 Regenerate the rest", elem_id="regenerate")
                with gr.Accordion("诗笺 Poem card", open=False, elem_id="card_options"):
                    card_text = gr.Textbox(label="诗 Poem", elem_id="card_text", lines=2,
                                           info="第一首（可改）· the best poem (editable)")
                    with gr.Row():
                        card_title = gr.Textbox(label="题 Title", elem_id="card_title", max_lines=1)
                        card_form = gr.Textbox(label="体 Form", elem_id="card_form", max_lines=1)
                    card_marks = gr.Checkbox(True, label="标平仄 Tone marks", elem_id="card_marks",
                                             info="平 level, 仄 oblique, 中 either, beside each character")
                    redraw = gr.Button("重绘诗笺 Redraw card", elem_id="card_redraw")
                with gr.Accordion("JSON（与 /generate API 相同 · same as the API）", open=False):
                    poems_json = gr.JSON(label="result", elem_id="result_json")
        inputs = [prompt, acrostic, form, rhyme, rhyme_strength, tones, tone_strength, temperature, top_k, top_p,
                  style, num_candidates, seed, script, theme]
        gr.Examples(EXAMPLES, inputs=[prompt, acrostic, form, style, seed, theme], label="示例 Examples (click to fill)",
                    elem_id="examples")
        after = dict(fn=after_generate, inputs=[poems_json, card_marks], api_visibility="private",
                     outputs=[card_text, card_title, card_form, card_download, permalink, *line_rows, *locks,
                              *line_boxes], show_progress_on=[card_download])
        # preprocess=False: the page's values reach request_kwargs as sent, which checks every one (as for
        # /generate) and echoes them escaped. Gradio's own choice check would put a crafted form or script
        # value into its toast as HTML.
        # Progress: gradio's page re-sends every status change (a click makes several) to every component
        # that any event has shown progress on, copying each one's value as it goes; with the 30 outputs of
        # `after` and a full result in poems_json that was ~50 ms of the browser's time per status change,
        # before the first line could show. So each event shows progress on one component (show_progress_on),
        # and the two streaming events show none: the draft's 写作中 head is their progress (gradio's overlay
        # also cost ~45 ms). Errors still toast. See benchmarks/browser_latency.py.
        quiet = dict(show_progress="hidden", show_progress_on=[poems_html])
        done = go.click(generate_page, inputs, [poems_html, poems_json], api_name="generate_page",
                        api_visibility="undocumented", concurrency_id="poet", concurrency_limit=concurrency,
                        preprocess=False, **quiet)
        done.success(**after).success(None, permalink, None, js=PERMALINK_JS)
        again = regenerate.click(regenerate_page, [*inputs, relax_locked, poems_json, *locks, *line_boxes],
                                 [poems_html, poems_json],
                                 api_visibility="private", concurrency_id="poet", concurrency_limit=concurrency,
                                 preprocess=False, **quiet)
        again.success(**after).success(None, permalink, None, js=PERMALINK_JS)
        alt_show.click(show_alternatives, [poems_json, alt_position], [alt_choices, edit_status],
                       api_visibility="private", concurrency_id="poet", concurrency_limit=concurrency)
        picked = alt_apply.click(apply_alternative, [poems_json, alt_position, alt_choices],
                                 [poems_html, poems_json, alt_choices, edit_status], api_visibility="private",
                                 concurrency_id="poet", concurrency_limit=concurrency, show_progress_on=[poems_html])
        picked.success(**after).success(None, permalink, None, js=PERMALINK_JS)
        demo.load(None, None, None, js=CLICK_JS)
        gr.api(alternatives, api_name="alternatives", concurrency_id="poet", concurrency_limit=concurrency)
        gr.api(replace, api_name="replace", concurrency_id="poet", concurrency_limit=concurrency)
        # A permalink (?form=七绝&seed=7...): gradio hands the page's query string to this load event.
        loaded = demo.load(from_permalink, None, [*inputs, poems_html, poems_json], api_visibility="private",
                           concurrency_id="poet", concurrency_limit=concurrency, show_progress_on=[poems_html])
        loaded.success(**after)
        redraw.click(card, [card_text, card_title, card_form, card_marks], card_download, api_name="card",
                     concurrency_limit=4)
        copy_text.click(None, None, None, js=COPY_JS)
        reseed.click(new_seed, None, seed, queue=False, api_visibility="private")
        gr.api(generate, api_name="generate", concurrency_id="poet", concurrency_limit=concurrency)
    return demo

def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args, generator = _early if argv is None and _early else (parse_args(argv), None)
    # The model loads and decodes in a child process: beside this one's event loop, not taking turns with it.
    generator = wait_for_generator(generator or start_generator(args), args.model)
    if not generator.info.get("corpus"):
        log.warning("no corpus file (%s): copy reports will lack the nearest corpus poem; export the model "
                    "with `python -m train.export` or pass --corpus", args.corpus or "the model folder's corpus.npz")
    log.info("model %s ready %.1f s after start", args.model or DEFAULT_MODEL_DIR, time.perf_counter() - STARTED)
    shown = args.model or str(DEFAULT_MODEL_DIR)  # a folder by its name only: no server paths on the page
    concurrency = max(1, args.concurrency)
    demo = build_app(generator, model_name=Path(shown).name if Path(shown).is_dir() else shown,
                     concurrency=concurrency)
    demo.queue(default_concurrency_limit=concurrency, max_size=QUEUE_SIZE)
    import uvicorn

    try:
        log.info("serving on http://%s:%d (health: /health)", args.host, args.port)
        uvicorn.run(server_app(demo, generator), host=args.host, port=args.port, log_level="warning",
                    timeout_keep_alive=5, access_log=False)
    finally:
        generator.close()


if __name__ == "__main__":
    main()
