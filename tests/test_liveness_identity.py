"""Liveness is proven for a person: when the accepted identity changes, the evidence
starts again (issue 18, item 5: a replayed Miranda was let in as Lacamoire on a face
already latched live)."""

import pytest

from edge.kiosk.liveness import LivenessGate


def _make_live(g, start):
    """Evidence as observe() leaves it after a live face (the mesh work is tested elsewhere)."""
    g._evidence.extend(range(start, start + g.need + 2))
    g._blinks.append(start + 1)
    g.proven = True


@pytest.mark.parametrize("strictness", ["normal", "strict"])
def test_a_change_of_identity_resets_the_evidence(strictness):
    g = LivenessGate(strictness, mesh=object())   # the mesh is never run here
    _make_live(g, 10)
    assert g.refuse("Lin-Manuel Miranda", 20) is None          # live, for Miranda
    assert g.refuse("Lin-Manuel Miranda", 21) is None
    why = g.refuse("Alex Lacamoire", 22)                      # same face, another identity
    assert why is not None and ("no face mesh" in why or "no sign of life" in why)
    assert not g.proven and not g._evidence and not g._blinks
    _make_live(g, 30)                                         # proven again, now for Lacamoire
    assert g.refuse("Alex Lacamoire", 40) is None
    assert g.refuse("Lin-Manuel Miranda", 41) is not None


def test_reset_forgets_whom_the_evidence_was_for():
    g = LivenessGate("normal", mesh=object())
    _make_live(g, 1)
    assert g.refuse("Ada", 10) is None
    g.reset()                                                 # the face left
    _make_live(g, 20)
    assert g.refuse("Bob", 30) is None                        # a new face, a new proof
