"""``clipseg-bench``: latency of the segmenters, of the node's per-frame work and of the node process.

The package's modules follow the sections: ``catalogue`` (the rows), ``factories`` (model
files), ``latency`` (runners, section 1), ``overhead`` (section 2), ``memory`` (section 3),
``report`` (ratios, tables, plot) and ``cli``.

One run, one machine, batch 1, after warm-up.  Three sections:

1. **Model latency** – every selected model x input size x backend, timed through
   :class:`clipseg_ros.segmenter.Segmenter` (the node's code path: uint8 RGB in, labels out) after
   exporting each network with :func:`clipseg_ros.model_file.save_model_file`.  The model input size
   equals the frame size in these rows, so the Segmenter's resize steps are no-ops.  Models:

   - ``default``: the packaged default model (``clipseg_ros/models/default.clipseg``) or
     ``--model PATH``;
   - the CLIP-guided / baseline twins of STDC1, STDC2 and MobileNetV2 (random weights; latency
     does not depend on the weights);
   - torchvision's LRASPP-MobileNetV3-Large and DeepLabV3-MobileNetV3-Large (random weights), what
     a user would otherwise pick.  They run in the same deploy wrapper (uint8 in, normalisation,
     bilinear upsampling, argmax and confidence in the graph) and the same PyTorch / ONNX Runtime
     session code as the Segmenter (``segmenter._TorchBackend`` / ``_OnnxBackend``).

   Backends: ``torch`` and ``onnxruntime`` (``--backends``) plus ``torch-raw``: the bare network
   forward (float input already normalised, in the channels-last layout DeployWrapper produces;
   logits at 1/8 scale: no upsampling, no argmax, no copies), which shows what the deploy wrapper
   and the host<->tensor traffic cost.

   Rows of one (size, backend) group are timed **interleaved**: round robin over the models, each
   turn ``--block`` back-to-back timed calls after ``--settle-ms`` of untimed calls (ONNX Runtime's
   thread pool keeps spinning for tens of ms after a run and would slow the next session down).
   A load change on a shared machine then hits all models alike and the ratios between rows
   (guided / baseline twin, default / LRASPP) stay meaningful even when the absolute numbers are
   noisy.  ``--no-interleave`` times the rows one after another instead.

2. **Node overhead** – the per-frame work the node does besides inference, at 640x480
   (``--overhead-size``): decoding (``image_to_rgb`` of rgb8 and bgr8 ``sensor_msgs/Image``,
   JPEG ``CompressedImage``), the Segmenter's preprocess (resize to the model input) and postprocess
   (label resize back), colorize, overlay, filling the labels / color / overlay messages and, when
   rclpy is available, publishing them through rclpy to a subscriber in this process.  Reported as
   medians and as a percentage of the default model's inference time for each backend.

3. **Node memory** – the real ``seg_node`` console script started as a subprocess with the default
   model, fed 640x480 frames closed-loop for ``--node-seconds``; its peak RSS (``VmHWM`` from
   ``/proc/<pid>/status``) is read before it is stopped.

Outputs (``--out``, default ``bench_results/<timestamp>``): ``bench.json`` (every row, the machine
description and the settings), ``bench.md`` (Markdown tables with the ratios), and
``latency_vs_size.png`` (median latency vs input pixels, log y).

**DDS**: sections 2 (publish) and 3 create a ROS context.  This tool does not touch the DDS
settings (on a robot they must reach the network); ``make bench`` sets
``FASTDDS_BUILTIN_TRANSPORTS`` (shared memory only), ``ROS_DOMAIN_ID`` and ``ROS_LOG_DIR`` first.
``--no-publish --no-memory`` runs without any ROS context.
"""
from __future__ import annotations

from .catalogue import MODEL_SPECS, PACKAGED_DEFAULT, RAW, SCHEMA
from .cli import build_parser, cuda_problem, main, parse_args, run_bench

__all__ = ["MODEL_SPECS", "PACKAGED_DEFAULT", "RAW", "SCHEMA", "build_parser", "cuda_problem", "main",
           "parse_args", "run_bench"]
