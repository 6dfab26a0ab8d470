"""The web app's parts, used by app.py (the entry point, which wires them into one page):

    request.py    a request's values checked and mapped onto the library's arguments; errors as messages
    permalink.py  a poem's settings in the page's query string, and back
    cowrite.py    writing with the poet: a character's alternatives, replacing one, locked lines
    render.py     the HTML of annotated poems
    card.py       the poem card, a 竖排 PNG
    server.py     the HTTP server: request limits in front of gradio, /health

Nothing here is imported by the library (poetry_model/).
"""
