"""clipseg_training: offline two-stage CLIP text-distillation training (installed from ``training/``).

Imports the runtime's network definitions from ``clipseg_ros.networks``; never the other way round.
"""
