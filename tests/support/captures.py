"""The real guest captures for the tests: paths and helpers ship with the demo (demo.captures);
DATA is the test data directory the captures were copied into."""

from pathlib import Path

from demo.captures import ALL as ALL
from demo.captures import GUESTS as GUESTS
from demo.captures import PHASES as PHASES
from demo.captures import SCENARIOS as SCENARIOS
from demo.captures import Capture as Capture
from demo.captures import materialize_links as materialize_links
from demo.captures import tree_args as tree_args

DATA = Path(__file__).resolve().parent.parent / "data"
