"""lading on Temporal: `lading worker` runs the runners as activities and the `run` and `ship`
workflows; `lading submit` starts them. The contract is plans/ship.py."""
