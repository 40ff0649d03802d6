"""clipseg_ros: real-time semantic segmentation for ROS 2 with CLIP-distilled segmenters.

The runtime never imports training code, open_clip or datasets.  Plain-Python pieces
(``image_codec``, ``visualize``, ``segmenter``, ``model_file``, ``metrics``) are usable and
testable without ROS; the ROS glue lives in ``clipseg_ros.node``.
"""

__version__ = "0.1.0"
