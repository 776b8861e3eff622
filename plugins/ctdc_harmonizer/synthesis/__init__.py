"""The receiving side of the hand-off: DP synthesis of a harmonized release (issue 8).

handoff (verify the folder) -> risk (disclosure-risk report) -> suppress -> fit (DP aggregates:
noisy_aggregates, pac-synth's mechanism in numpy, or pac-synth's own fit; ledger) -> sample
(own vectorised sampler or pac-synth's) -> evaluate (comparability) -> publish (public folder).
`steps` runs them over files for the DAG and CLI.
"""
