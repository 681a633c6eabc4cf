"""A pickle gadget for the "runs nothing" tests: unpickling an OpenPayload creates its marker file with the
builtin open(), so whether pickled code ran shows on disk (and the gadget needs no test module to import)."""

from __future__ import annotations

import pickle


class OpenPayload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def live_payload(tmp_path):
    """(payload, marker path): a payload checked to run under plain pickle (the control), marker removed."""
    marker = tmp_path / "payload_ran"
    payload = OpenPayload(str(marker))
    pickle.loads(pickle.dumps(payload)).close()
    assert marker.exists()
    marker.unlink()
    return payload, marker
