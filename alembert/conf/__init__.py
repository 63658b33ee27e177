"""The Hydra configuration, shipped inside the package so that `pip install .` (not only -e) finds it.

Entry points name it as `config_path="pkg://alembert.conf"`; code that composes configs itself uses CONF_DIR.
"""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent
