"""A text progress bar for long commands: redrawn in place on a terminal, a line per step otherwise."""
import time


class ProgressBar:
    """Show done/total, the percentage, the rate and a note (where the work is) on stream.

    On a terminal the bar is redrawn in place at most ten times a second; elsewhere (a log file, a
    pipe) a plain line is written each time another `step` percent is done, so logs stay short.
    """

    def __init__(self, stream, total, *, label="", step=10, width=30, tty=None, clock=time.monotonic):
        self.stream = stream
        self.total = max(total, 0)
        self.label = label
        self.step = step
        self.width = width
        self.tty = stream.isatty() if tty is None else tty
        self.clock = clock
        self.started = clock()
        self._drawn_at = None
        self._next_percent = step
        self._done = 0
        self._note = ""
        self._open_line = False
        self._drawn_done = None

    def update(self, done, note=""):
        """Record that done of total are finished; note says where (e.g. the last offset)."""
        self._done, self._note = done, note
        now = self.clock()
        if self.tty:
            if self._drawn_at is None or now - self._drawn_at >= 0.1 or done >= self.total:
                self._drawn_at, self._drawn_done = now, done
                self._write("\r" + self._line(now) + "\x1b[K")
                self._open_line = True
        elif self._percent() >= self._next_percent:
            self._write(self._line(now) + "\n")
            while self._next_percent <= self._percent():
                self._next_percent += self.step

    def finish(self):
        """End the bar's line, drawing the final state first on a terminal."""
        if self.tty and self._open_line:
            last = "" if self._drawn_done == self._done else "\r" + self._line(self.clock()) + "\x1b[K"
            self._write(last + "\n")
            self._open_line = False

    def _percent(self):
        return 100 if self.total == 0 else self._done * 100 // self.total

    def _line(self, now):
        elapsed = max(now - self.started, 1e-9)
        rate = f"{self._done / elapsed:,.0f} rec/s"
        counts = f"{self._done:,}/{self.total:,} {self._percent():3d}%"
        note = f"  {self._note}" if self._note else ""
        prefix = f"{self.label} " if self.label else ""
        if not self.tty:
            return f"{prefix}{counts}  {rate}{note}"
        filled = self.width if self.total == 0 else self.width * min(self._done, self.total) // self.total
        bar = "#" * filled + "." * (self.width - filled)
        return f"{prefix}[{bar}] {counts}  {rate}{note}"

    def _write(self, text):
        self.stream.write(text)
        self.stream.flush()
