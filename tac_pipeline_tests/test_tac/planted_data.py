"""Planted data sets with nouns: classes that look alike in the images and differ in their nouns.

``groups`` groups of ``group_size`` classes. The classes of a group share a strong image direction a_g and
differ by a weak direction b_c (weight ``weak``); a class-independent "style" direction s_g splits every group
into two strong modes (+-``style``, e.g. lighting). Clustering the images therefore finds the groups, or the
style modes, rather than the classes. The vocabulary holds, per class, three clean nouns normalise(a_g + b_c)
(+ small noise) and 200 random distractors: the nouns carry the class and not the style.

``group_size=1, style=0`` is a plain set: every class has a direction of its own.
"""

from __future__ import annotations

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def planted_groups(
    seed: int,
    groups: int = 3,
    group_size: int = 2,
    n_per: int = 100,
    dim: int = 32,
    weak: float = 0.3,
    style: float = 0.6,
    noise: float = 0.08,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (groups * group_size * n_per, dim), nouns (3K + 200, dim), labels) with K = groups * group_size."""
    k = groups * group_size
    if 2 * groups + k > dim:
        raise ValueError(f"dim={dim} is too small for {groups} groups of {group_size} classes")
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0].T  # orthonormal directions
    a, b, s = basis[:groups], basis[groups : groups + k], basis[groups + k : 2 * groups + k]
    y = np.repeat(np.arange(k), n_per)
    group = y // group_size
    sign = rng.choice([-1.0, 1.0], size=y.size)
    v = a[group] + weak * b[y] + style * sign[:, None] * s[group] + noise * rng.standard_normal((y.size, dim))
    class_nouns = np.repeat(a[np.arange(k) // group_size] + b, 3, axis=0)
    class_nouns = class_nouns + 0.05 * rng.standard_normal((3 * k, dim))
    nouns = np.concatenate([class_nouns, rng.standard_normal((200, dim))])
    return unit(v), unit(nouns), y


#: The synthetic sets of the K-choice tests and benchmark: name -> planted_groups keyword arguments. In
#: ``pairs`` and ``triples`` the classes of a group look alike (no style modes, a weak class direction); in the
#: ``-style`` sets each group is also split into two style modes, so the images show 2 x groups visual modes.
K_SETS = {
    "plain": {"groups": 10, "group_size": 1, "style": 0.0},
    "pairs": {"groups": 5, "group_size": 2, "style": 0.0},
    "triples": {"groups": 5, "group_size": 3, "style": 0.0},
    "pairs-style": {"groups": 5, "group_size": 2},
    "triples-style": {"groups": 5, "group_size": 3},
}
