"""Output helpers shared by the hand-run benchmarks: progress to stderr and
plain or markdown tables."""

import sys
from collections.abc import Sequence


def log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]],
          markdown: bool) -> str:
  if markdown:
    lines = [headers, ["---:"] * len(headers), *rows]
    return "\n".join("| " + " | ".join(r) + " |" for r in lines)
  widths = [max(len(r[i]) for r in [headers, *rows])
            for i in range(len(headers))]
  return "\n".join("  ".join(c.rjust(wd) for c, wd in zip(r, widths))
                   for r in [headers, *rows])
