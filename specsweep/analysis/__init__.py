"""`specsweep analyze`: paired statistics from the blocks design, the cost model (time per generated
token against draft tokens per generated token), the acceptance -> speed-up break-even, and the MoE
expert-coverage knee test. Pure numpy/scipy on trial records; no plotly here (see
`specsweep.report.analysis_section` for the page)."""
