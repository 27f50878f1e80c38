"""The classifier-limits study's measures on hand-built predictions."""

import numpy as np
import torch

from studies.real_marrow.classifier_limits import (
    class_mix_accuracy,
    confusion_rows,
    dihedral_probs,
    split_rows,
)


class _Orientation(torch.nn.Module):
    """Logits (2 classes): class 0 when the crop's top-left pixel is its brightest, else 1."""

    def predict_logits(self, crops: torch.Tensor) -> torch.Tensor:
        flat = crops.float().flatten(2).sum(1)
        top_left = (flat.argmax(1) == 0).float()
        return torch.stack([top_left, 1 - top_left], 1) * 10


def _measures(single_pred, single_y, comp_pred, comp_y, **extra):
    def probs(pred):
        return np.eye(2)[np.asarray(pred)][None]

    m = {
        "names": ["A", "B"],
        "single": {"labels": np.asarray(single_y), "probs": probs(single_pred)},
        "comp": {"labels": np.asarray(comp_y), "probs": probs(comp_pred)},
    }
    m.update(extra)
    return m


def test_dihedral_probs_see_all_eight_orientations():
    crop = torch.zeros(1, 3, 4, 4)
    crop[..., 0, 0] = 255
    probs = dihedral_probs(_Orientation(), crop)
    assert probs.shape == (8, 1, 2)
    # of the 8 orientations, two keep the top-left corner in place: as it is and the transpose
    at_top_left = probs[:, 0, 0] > 0.5
    assert at_top_left[0] and at_top_left.sum() == 2


def test_class_mix_accuracy_weights_single_crops_by_composite_shares():
    # single crops: A always right, B right half the time; composites: 3 A, 1 B
    m = _measures([0, 0, 1, 0], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 1])
    assert class_mix_accuracy(m) == 100 * (3 * 1.0 + 1 * 0.5) / 4


def test_split_rows_and_confusions():
    m = _measures(
        [0, 1],
        [0, 1],
        [0, 1, 1, 0],
        [0, 0, 1, 1],
        crowding=np.asarray(["isolated", "touching", "isolated", "touching"]),
        diameter=np.asarray([40.0, 40.0, 80.0, 80.0]),
        twin_ok=np.asarray([True, True, True, False]),
    )
    rows = dict((r[0], r[1]) for r in split_rows(m))
    assert rows["all composite crops"] == "50.0 % (n=4)"
    assert rows["crowding: isolated"] == "100.0 % (n=2)"
    assert rows["crowding: touching"] == "0.0 % (n=2)"
    assert rows["twin single crop wrong"] == "0.0 % (n=1)"
    assert confusion_rows(m) == [["A", "B", "1", "50.0"], ["B", "A", "1", "50.0"]]
