"""Everything a person reads: terminal tables, result files and figures. Never trains."""
