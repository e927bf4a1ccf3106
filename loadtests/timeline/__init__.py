"""See the race: a recorded history drawn as one self-contained HTML file.

render.py turns a history, its verdict and the faults injected into a page
that opens from disk (no network): each request a bar from its start to its
end, in lanes per user or per worker process and thread (X-Worker), each
anomaly's witness highlighted and listed. race.py is `make race`: a page on
127.0.0.1 where a learner fires a few requests at once and sees that race.
"""

from loadtests.timeline.render import LIMIT, render, write_timeline

__all__ = ["LIMIT", "render", "write_timeline"]
