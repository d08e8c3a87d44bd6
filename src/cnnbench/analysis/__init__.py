"""Numbers a comparison can be trusted on: statistics over seeds, factor effects, claims and
diagnosis of failed runs. Reads the store; never trains."""
