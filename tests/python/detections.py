"""torchvision's detection models for the model zoo, and the comparison of their detections.

A detection model's output is a set: among detections of (nearly) equal score the order is
whatever NonMaxSuppression and TopK happen to do, which ONNX leaves to the implementation. So
detections are compared in groups of equal score (within a tolerance) as multisets of
(label, box), after the counts and the score sequences are required to be the same.

With torchvision's default initialisation (BatchNorm statistics 0 and 1) most activations of
the mobilenet backbones die, and fasterrcnn's 100 detections all have one score, its region
proposals many equal objectness values: which of the tied ones TopK keeps is then arbitrary,
and so is the output. The models here have their BatchNorm statistics measured on images
instead (as models.py does for the classifiers), which leaves every score distinct.
"""

from collections import namedtuple

import numpy as np

# The images the BatchNorm statistics are measured on, and the one the tests run.
CALIBRATION_IMAGES = 4
IMAGE_SHAPE = (3, 320, 320)
# The outputs of every detection model; Mask R-CNN adds masks, Keypoint R-CNN keypoints and
# keypoints_scores.
DETECTION_KEYS = ("boxes", "scores", "labels")


def detection_model(name, seed=0):
    """torchvision.models.detection's `name`, seeded random weights, calibrated BatchNorm
    statistics, in eval mode; R-CNN models keep detections of any score (box_score_thresh 0:
    at random weights the 91 class scores are all near 1/91, below the default 0.05)."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    extra = {"box_score_thresh": 0.0} if "rcnn" in name else {}
    model = getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None,
                                                        **extra)
    batchnorms = [m for m in model.modules()
                  if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for bn in batchnorms:
            bn.reset_running_stats()
            bn.momentum = None  # a plain average over the calibration pass
        # The whole model's training pass needs targets: the parts with BatchNorms run alone,
        # on images resized as at inference (in training mode the transform picks a random
        # size from min_size: keypointrcnn's are 640 to 800, 768 drawn here, 800 at eval).
        model.train()
        model.transform.eval()
        images, _ = model.transform(list(torch.rand((CALIBRATION_IMAGES,) + IMAGE_SHAPE)))
        features = model.backbone(images.tensors)
        if hasattr(model, "head"):
            model.head(list(features.values()))
    return model.eval()


def _order(det):
    o = np.argsort(-np.asarray(det["scores"]), kind="stable")
    return {k: np.asarray(det[k])[o] for k in DETECTION_KEYS}


def _perfect_matching(compatible):
    """Whether the square boolean matrix `compatible` has a perfect matching of rows to
    columns (Kuhn's augmenting paths); returns the first row left unmatched, or None."""
    n = len(compatible)
    owner = [-1] * n  # column -> row

    def augment(row, seen):
        for col in np.nonzero(compatible[row])[0]:
            if not seen[col]:
                seen[col] = True
                if owner[col] < 0 or augment(owner[col], seen):
                    owner[col] = row
                    return True
        return False

    for row in range(n):
        if not augment(row, [False] * n):
            return row
    return None


def assert_detections_match(got, want, score_atol, box_atol):
    """Raises AssertionError unless `got` holds the detections of `want` (dicts of boxes
    [N, 4], scores [N], labels [N]): the same count, the same scores in decreasing order
    within score_atol, and in each run of scores within score_atol of the next (ties, whose
    order is the implementation's) the same multiset of (label, box), boxes within box_atol."""
    got, want = _order(got), _order(want)
    n = len(want["scores"])
    assert len(got["scores"]) == n, f"{len(got['scores'])} detections, expected {n}"
    diff = np.abs(got["scores"].astype(np.float64) - want["scores"])
    worst = int(np.argmax(diff)) if n else 0
    assert n == 0 or diff[worst] <= score_atol, (
        f"score {worst} in decreasing order is {got['scores'][worst]:.8g}, expected "
        f"{want['scores'][worst]:.8g} (tolerance {score_atol:g})")
    breaks = np.nonzero(want["scores"][:-1] - want["scores"][1:] > score_atol)[0] + 1
    for start, stop in zip(np.r_[0, breaks], np.r_[breaks, n]):
        g = {k: v[start:stop] for k, v in got.items()}
        w = {k: v[start:stop] for k, v in want.items()}
        box_diff = np.abs(g["boxes"][:, None, :].astype(np.float64) - w["boxes"][None]).max(-1)
        compatible = (g["labels"][:, None] == w["labels"][None]) & (box_diff <= box_atol)
        row = _perfect_matching(compatible)
        assert row is None, (
            f"detection {start + row} (score {g['scores'][row]:.8g}, label {g['labels'][row]}, "
            f"box {np.round(g['boxes'][row], 4).tolist()}) has no counterpart among the "
            f"{stop - start} expected of score {w['scores'][0]:.8g} +- {score_atol:g} "
            f"(labels {sorted(set(w['labels'].tolist()))}, box tolerance {box_atol:g}, nearest "
            f"box of its label {np.round(_nearest(g, w, row), 4).tolist()})")


def _nearest(g, w, row):
    same = np.nonzero(w["labels"] == g["labels"][row])[0]
    if not len(same):
        return []
    d = np.abs(w["boxes"][same] - g["boxes"][row]).max(-1)
    return w["boxes"][same[int(np.argmin(d))]]


# What count_matches finds: `count` detections matched; for each further output of the
# detections, `worst` its largest difference between matched pairs and `beyond` how many of
# its elements differ by more than a tolerance.
Matches = namedtuple("Matches", "count worst beyond")

def count_matches(got, want, score_atol, box_atol, atol=None):
    """How many detections of `want` have their own counterpart in `got` (the same label, the
    box within box_atol, the score within score_atol; greedy from the highest score, each got
    detection used once), as a Matches: with, for every other output of the detections (the
    keys of `want` beyond boxes, scores and labels: masks, keypoints, keypoints_scores), the
    largest difference between matched pairs (worst[key]), and for the keys of atol how many
    elements of matched pairs differ by more than atol[key] (beyond[key]). For models whose
    float32 result PyTorch itself does not reproduce exactly (Mask and Keypoint R-CNN): how
    close each float32 answer comes to the float64 one."""
    atol = atol or {}
    extra = [k for k in want if k not in DETECTION_KEYS]
    used = np.zeros(len(got["scores"]), bool)
    matched, worst, beyond = 0, dict.fromkeys(extra, 0.0), dict.fromkeys(atol, 0)
    for i in np.argsort(-np.asarray(want["scores"]), kind="stable"):
        box_diff = np.abs(got["boxes"] - want["boxes"][i]).max(-1)
        ok = ((got["labels"] == want["labels"][i]) & (box_diff <= box_atol) &
              (np.abs(got["scores"] - want["scores"][i]) <= score_atol) & ~used)
        if ok.any():
            j = int(np.argmin(np.where(ok, box_diff, np.inf)))
            used[j] = True
            matched += 1
            for k in extra:
                diff = np.abs(np.asarray(got[k][j], np.float64) - want[k][i])
                worst[k] = max(worst[k], float(diff.max(initial=0.0)))
                if k in atol:
                    beyond[k] += int(np.count_nonzero(diff > atol[k]))
    return Matches(matched, worst, beyond)
