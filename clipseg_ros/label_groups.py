"""Class groups: a YAML file that maps the model's classes to the user's groups (``label_groups``).

::

    # group order = the value in ~/groups (drivable = 0, obstacle = 1, other = 2)
    drivable: [Road]
    obstacle: [Car, Pedestrian, Bicyclist, Pole, Fence]
    other:                      # the long form gives a group its own color in ~/groups/color
      classes: [Sky, Building, Pavement, Tree, SignSymbol]
      color: [128, 128, 128]

Each top-level key is a group, in file order; its value lists model class names (exactly as the
model file spells them).  Classes in no group, and unlabeled pixels (255), become 255 in
``~/groups``.  A group's color is its ``color``, else the model palette's color of its first
class.  Every problem is a :class:`LabelGroupsError` whose message names the file and the line:
an unknown class (with the nearest class names), a class in two groups (both lines), a group
named twice, an empty group, a bad color, more than 255 groups.  Plain Python (PyYAML, numpy,
OpenCV); the node only calls :func:`load_label_groups` and :meth:`LabelGroups.apply`.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from .conventions import IGNORE_INDEX

__all__ = ["IGNORE", "LabelGroups", "LabelGroupsError", "load_label_groups", "parse_label_groups"]

#: ``~/groups`` value of pixels whose class is in no group (and of unlabeled pixels).
IGNORE = IGNORE_INDEX     # a pixel in no group
MAX_GROUPS = 255


class LabelGroupsError(ValueError):
    """The label groups file is unusable; the message names the file and the line."""


@dataclass(frozen=True)
class LabelGroups:
    """The validated groups: ``names[g]`` holds ``classes[g]`` (class indices), color ``palette[g]``."""

    names: tuple[str, ...]
    classes: tuple[tuple[int, ...], ...]
    palette: np.ndarray          # (G, 3) uint8
    lut: np.ndarray              # (256,) uint8: class index -> group index, IGNORE elsewhere
    unmapped: tuple[str, ...]    # model classes in no group
    source: str = ""

    def apply(self, labels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``(H, W)`` uint8 class labels -> ``(H, W)`` uint8 group indices (``IGNORE`` = none)."""
        lab = np.asarray(labels)
        if lab.ndim != 2 or lab.dtype != np.uint8:
            raise ValueError(f"label groups: labels must be HxW uint8, got {lab.shape} {lab.dtype}")
        if out is None:
            out = np.empty(lab.shape, np.uint8)
        if lab.size:
            cv2.LUT(lab, self.lut, dst=out)
        return out


def _line(node) -> int:
    return node.start_mark.line + 1


def parse_label_groups(text: str, class_names, palette=None, source: str = "label groups") -> LabelGroups:
    """Validate ``text`` (the YAML) against the model's ``class_names``; ``palette`` (K, 3) gives
    the default group colors.  ``source`` names the file in error messages."""
    class_names = [str(c) for c in class_names]
    index = {c: i for i, c in enumerate(class_names)}

    def fail(msg: str, node=None):
        where = f" line {_line(node)}" if node is not None else ""
        raise LabelGroupsError(f"{source}{where}: {msg}")

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise LabelGroupsError(f"{source}{where}: not valid YAML: "
                               f"{getattr(exc, 'problem', None) or exc}") from None
    if root is None:
        fail("the file is empty; write one 'group: [Class, ...]' line per group")
    if not isinstance(root, yaml.MappingNode):
        fail("expected a mapping of group names to class lists ('drivable: [Road]')", root)
    if len(root.value) > MAX_GROUPS:
        fail(f"{len(root.value)} groups; at most {MAX_GROUPS} fit a mono8 image (255 = no group)")

    names, groups, colors = [], [], []
    group_line: dict[str, int] = {}
    owner: dict[int, tuple[str, int]] = {}          # class index -> (group, line)
    for key, value in root.value:
        if not isinstance(key, yaml.ScalarNode) or not str(key.value).strip():
            fail("a group name must be a non-empty string", key)
        name = str(key.value).strip()
        if name in group_line:
            fail(f"group {name!r} is defined twice (first on line {group_line[name]})", key)
        group_line[name] = _line(key)
        color_node = None
        classes_node = value
        if isinstance(value, yaml.MappingNode):
            fields = {str(k.value): v for k, v in value.value}
            unknown = sorted(set(fields) - {"classes", "color"})
            if unknown:
                fail(f"group {name!r}: unknown key {unknown[0]!r} (use 'classes' and 'color')", value)
            if "classes" not in fields:
                fail(f"group {name!r} has no 'classes' list", value)
            classes_node, color_node = fields["classes"], fields.get("color")
        elif isinstance(value, yaml.ScalarNode) and value.value and value.tag.endswith(":str"):
            classes_node = yaml.SequenceNode("tag:yaml.org,2002:seq", [value],
                                             value.start_mark, value.end_mark)   # "g: Road"
        if not isinstance(classes_node, yaml.SequenceNode):
            fail(f"group {name!r}: expected a list of class names, e.g. {name}: [{class_names[0]}]",
                 classes_node)
        if not classes_node.value:
            fail(f"group {name!r} has no classes", classes_node)
        members = []
        for item in classes_node.value:
            if not isinstance(item, yaml.ScalarNode):
                fail(f"group {name!r}: a class name must be a string", item)
            cls = str(item.value)
            if cls not in index:
                near = difflib.get_close_matches(cls, class_names, n=3, cutoff=0.5)
                hint = f"; did you mean {', '.join(map(repr, near))}?" if near else ""
                fail(f"unknown class {cls!r} in group {name!r} (the model's classes: "
                     f"{', '.join(class_names)}){hint}", item)
            ci = index[cls]
            if ci in owner:
                other, other_line = owner[ci]
                if other == name:
                    fail(f"class {cls!r} is listed twice in group {name!r}", item)
                fail(f"class {cls!r} is in group {other!r} (line {other_line}) and in group "
                     f"{name!r}: groups must not overlap", item)
            owner[ci] = (name, _line(item))
            members.append(ci)
        if color_node is not None:
            vals = None
            if isinstance(color_node, yaml.SequenceNode) and len(color_node.value) == 3:
                try:
                    vals = [int(v.value) for v in color_node.value]
                except (TypeError, ValueError, AttributeError):
                    vals = None
            if vals is None or not all(0 <= v <= 255 for v in vals):
                fail(f"group {name!r}: color must be [r, g, b] with values 0..255", color_node)
            colors.append(tuple(vals))
        else:
            colors.append(None)
        names.append(name)
        groups.append(tuple(members))

    from .visualize import default_palette

    fallback = default_palette(len(names))
    pal = np.zeros((len(names), 3), np.uint8)
    for g, (members, color) in enumerate(zip(groups, colors)):
        if color is not None:
            pal[g] = color
        elif palette is not None and len(palette) > members[0]:
            pal[g] = np.asarray(palette)[members[0]]
        else:
            pal[g] = fallback[g]
    lut = np.full(256, IGNORE, np.uint8)
    for g, members in enumerate(groups):
        lut[list(members)] = g
    lut[IGNORE] = IGNORE
    pal.setflags(write=False)
    lut.setflags(write=False)
    unmapped = tuple(c for i, c in enumerate(class_names) if i not in owner)
    return LabelGroups(tuple(names), tuple(groups), pal, lut, unmapped, source)


def load_label_groups(path: str | os.PathLike, class_names, palette=None) -> LabelGroups:
    """Read and validate the groups file ``path`` (see :func:`parse_label_groups`)."""
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except OSError as exc:
        raise LabelGroupsError(f"cannot read {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise LabelGroupsError(f"{p}: not a text file") from None
    return parse_label_groups(text, class_names, palette, source=str(p))
