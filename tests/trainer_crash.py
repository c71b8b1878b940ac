"""A Ctrl-C in the middle of training, for the resume tests of the link-prediction trainer."""
from __future__ import annotations


def crash_at(trainer, call: int) -> None:
    """Make ``trainer``'s batch loss raise KeyboardInterrupt (what Ctrl-C raises) at its ``call``-th call."""
    calls, batch_loss = [0], trainer._batch_loss

    def crashing(batch, generator):
        calls[0] += 1
        if calls[0] == call:
            raise KeyboardInterrupt
        return batch_loss(batch, generator)

    trainer._batch_loss = crashing
