"""Consent rules as data: who may be texted, when, and how often (docs/compliance.md).

- `config`: the keywords.yaml fields that set them (opt_out_scope, quiet_hours, max_per_day,
  marketing), loaded and checked with the rest of the file;
- `quiet_hours`: the sending windows, federal and per state, each with its source and date;
- `area_codes`: the US state of each area code, which decides the state rules;
- `scope`: what a plain opt-out ends, and the words of its reply.

Pure: nothing here reads the database or the clock.
"""
