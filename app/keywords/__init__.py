"""keywords.yaml: its schema, its loader, the rules across its brands and its warnings, one module each.

- `schema`: the frozen `Rules` the file becomes, `Finding` and `CheckReport`, `parse_duration`, `segments`;
- `raw` and `nodes`: the file's shape and the reading of its YAML nodes, line by line;
- `loader`: `load_rules` (read, validate, freeze), with `conflicts`, the rules across brands and programs;
- `checks`: `check`, every error and the compliance and wording warnings.

Normalising and matching live in `app.matching`; the names other modules need are
re-exported here so they import from one place. Nothing in this package imports it back.
"""

from app.brands import Brand, Program
from app.keywords.checks import check
from app.keywords.loader import load_rules
from app.keywords.schema import CheckReport, Finding, Rules, parse_duration, segments
from app.matching import Kind, Match, SenderRules, is_opt_out_intent, normalize, split_words
from app.senders import SenderConfig

__all__ = [
    "Brand",
    "CheckReport",
    "Finding",
    "Kind",
    "Match",
    "Program",
    "Rules",
    "SenderConfig",
    "SenderRules",
    "check",
    "is_opt_out_intent",
    "load_rules",
    "normalize",
    "parse_duration",
    "segments",
    "split_words",
]
