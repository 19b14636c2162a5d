"""A progress bar over the stages of a command: each stage one call into the library, which
can be long at large horizons or sizes; shown on a terminal only (nothing in logs)."""

from __future__ import annotations

import sys


class Stages:
    """``st = Stages(n, "demo"); st.next("F(T)"); ...; st.close()``: one stage per call (a
    command that fails leaves its bar to the CLI, which closes open bars before the error)."""

    def __init__(self, total: int, desc: str):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="stage", file=sys.stderr, disable=None,
                        bar_format="{desc}: {n}/{total} stages |{bar}| {elapsed} {postfix}")
        self.started = False

    def next(self, name: str) -> None:
        """Close the running stage (if any) and start ``name``."""
        if self.started:
            self.bar.update()
        self.started = True
        self.bar.set_postfix_str(name)

    def close(self) -> None:
        """Finish the last stage and close the bar."""
        if self.started:
            self.bar.update()
        self.bar.close()
