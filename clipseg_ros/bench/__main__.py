"""``python -m clipseg_ros.bench``."""
import sys

from .cli import main

sys.exit(main())
