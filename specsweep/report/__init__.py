"""Reports: records -> the summary table (`specsweep run`) and the HTML page (`specsweep plot`)."""
