"""Skipping bad samples (``dataset.skip_bad=true``) without losing track of them.

A dataset that skips hands out a ``SkippedSample`` marker instead of a sample dict
when the sample's data break the contract (a ``SampleError``: unreadable or
truncated file, mask of the wrong size, label outside the class set). The marker
travels through the DataLoader like a sample, so it reaches the main process also
from worker processes, where a counter kept in the dataset object would stay.
``collate_skipping`` builds the batch from the good samples only and lists the
markers under ``batch["skipped"]``; a batch whose samples were all bad holds that
key alone. Nothing is replaced by another sample, so no sample is counted twice;
the module counts the markers per stage and reports them at the end of the epoch
(``skip_report``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from torch.utils.data import default_collate

SKIPPED_KEY = "skipped"


class SkippedSample(NamedTuple):
    """A sample left out of its batch: dataset ``index``, the sample's name, why.

    A named tuple (not a dataclass) so that Lightning's batch transfer passes it through.
    """

    index: int
    sample: str
    reason: str

    def describe(self) -> str:
        return f"{self.sample}: {self.reason}"


def collate_skipping(samples: Sequence[dict[str, Any] | SkippedSample]) -> dict[str, Any]:
    """Collate the sample dicts, list the ``SkippedSample`` markers under ``"skipped"``.

    Returns the ``default_collate`` of the good samples (image (B, 3, H, W), mask
    (B, H, W), index (B,), B = number of good samples) plus ``"skipped"``: a list of
    markers; only ``{"skipped": [...]}`` when no sample was good.
    """
    good = [s for s in samples if not isinstance(s, SkippedSample)]
    batch = default_collate(good) if good else {}
    batch[SKIPPED_KEY] = [s for s in samples if isinstance(s, SkippedSample)]
    return batch


def skip_report(stage: str, epoch: int, skipped: Sequence[SkippedSample]) -> str:
    """One message naming every skipped sample of an epoch and why, by dataset index."""
    lines = [s.describe() for s in sorted(skipped, key=lambda s: s.index)]
    return (
        f"{stage} epoch {epoch}: skipped {len(skipped)} bad sample(s) "
        "(dataset.skip_bad=true):\n  " + "\n  ".join(lines)
    )
