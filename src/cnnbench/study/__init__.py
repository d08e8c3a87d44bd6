"""Studies: study files, the typed plan, variants and ablations, and the driver that trains every
run through the store, locally, in processes or on Ray."""
