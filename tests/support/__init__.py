"""Helpers shared by tests/unit and tests/e2e.

pytest puts ``tests/`` and ``tools/`` on ``sys.path`` (``pythonpath`` in pyproject.toml, the one
place that does), so tests import ``support.*``, ``sandbox``, ``caller`` and ``testdb`` directly.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
