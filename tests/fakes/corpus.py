"""A tiny document corpus for knowledge-base tests: Markdown, HTML, text and a real PDF
(written by hand, so no PDF library is needed to make one)."""

from __future__ import annotations

from pathlib import Path

GARDEN_MD = """# Garden handbook

## Watering tomatoes

Tomato plants need deep watering twice a week. Water the soil, not the leaves, early in
the morning so the foliage dries before evening and blight has no chance.

## Pruning roses

Prune roses in late winter, just before the buds break. Cut above an outward-facing bud
at a 45 degree angle and remove dead, crossing or diseased canes first.
"""

BEES_HTML = """<!doctype html><html><head><title>Beekeeping basics</title>
<style>body { color: red }</style><script>var secret = "do not index";</script></head>
<body><nav>Home | About</nav><h1>Beekeeping basics</h1>
<h2>Hive inspection</h2><p>Inspect a beehive every seven to ten days in spring. Look for
eggs, larvae and capped brood to confirm the queen is laying.</p>
<h2>Swarm prevention</h2><p>Give the colony more space with an extra super before it
feels crowded; crowded colonies raise new queens and swarm.</p></body></html>
"""

COMPOST_PDF_LINES = [
    "Composting guide",
    "A compost heap needs a balance of green nitrogen-rich material",
    "and brown carbon-rich material such as dry leaves and cardboard.",
    "Turn the heap every two weeks to let oxygen in.",
]

# Error codes that only their words tell apart (hybrid retrieval tests).
PRINTER_MD = """# Printer errors

## E-4417

The print head overheated: let the printer cool for ten minutes before the next job.

## E-7144

The paper tray is empty: refill it with A4 sheets.

## E-1447

The toner cartridge is not an original one: replace it with a supported cartridge.

## E-4471

The scanner lid is open: close it.
"""

NOTES_TXT = "Sourdough starter notes: feed the starter flour and water daily at room temperature."


def make_pdf(lines: list[str]) -> bytes:
    """A minimal one-page PDF 1.4 with `lines` in Helvetica, text extractable by pypdf."""
    text = (
        "BT /F1 11 Tf 50 750 Td 14 TL "
        + " ".join(
            "(" + line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") '"
            for line in lines
        )
        + " ET"
    )
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text.encode()),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def write_corpus(folder: Path) -> Path:
    """garden.md, bees.html, compost.pdf and notes.txt (plus an ignored .png) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "garden.md").write_text(GARDEN_MD)
    (folder / "bees.html").write_text(BEES_HTML)
    (folder / "compost.pdf").write_bytes(make_pdf(COMPOST_PDF_LINES))
    sub = folder / "more"
    sub.mkdir(exist_ok=True)
    (sub / "notes.txt").write_text(NOTES_TXT)
    (folder / "picture.png").write_bytes(b"\x89PNG not a document")
    return folder
