"""What a person reads of a probe run: the headline tables with their intervals (`tables`),
label-efficiency and reliability figures (`figures`), report.md (`markdown`) and the terminal
tables (`console`).

Reads a run's tables (`tables.RunTables`, which `Results` satisfies) and `stats`; never imports
the run, so `Results.save` can write the report without an import cycle.
"""
