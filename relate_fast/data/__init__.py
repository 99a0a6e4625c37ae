"""Data shipped with relate_fast (the default compliance list; later the sample ad dataset)."""
