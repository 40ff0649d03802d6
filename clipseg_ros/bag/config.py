"""What a bag evaluation runs with: typed configs that ``clipseg-bag-eval``'s command line builds.

:func:`~clipseg_ros.bag.offline.run_offline` takes an :class:`OfflineConfig` and
:func:`~clipseg_ros.bag.live.run_live` a :class:`LiveConfig`; neither sees an argparse namespace.
The fields are recorded in ``results.json`` under ``config.args``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["EvalConfig", "LiveConfig", "OfflineConfig"]


@dataclass
class EvalConfig:
    """Options both modes share (see ``clipseg-bag-eval offline --help``)."""

    bag: str
    model: str
    out: str
    image_topic: str | None = None
    label_topic: str = "auto"
    label_map: list[str] | None = None
    device: str = "auto"
    backend: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    input_size: tuple | None = None      # (height, width) the network sees; None = the model file's
    limit: int | None = None
    every: int = 1
    samples: int = 8
    output_bag: str | None = None
    output_storage: str | None = None
    no_progress: bool = False
    quiet: bool = False
    warmup: int = 1
    argv: list[str] | None = None        # the command line, for the record

    mode = "eval"

    def record(self) -> dict:
        """The fields as results.json records them (``mode`` included, ``argv`` apart)."""
        out = {"mode": self.mode, **asdict(self)}
        out.pop("argv")
        return out


@dataclass
class OfflineConfig(EvalConfig):
    output_prefix: str = "/seg_node"      # topic prefix of the outputs in --output-bag

    mode = "offline"


@dataclass
class LiveConfig(EvalConfig):
    rate: float | str = 1.0               # times the recorded rate, or "max" (closed loop)
    loop: int = 1
    timeout: float = 10.0
    node_startup_timeout: float = 120.0
    node_name: str = "seg_node"
    node_param: list[str] = field(default_factory=list)
    node_executable: str | None = None
    node_log: str | None = None

    mode = "live"
