"""The run store: an SQLite index plus a folder per run, and the one record of a finished run."""
