"""`loadme`, the command line of the loadme API: a client of its HTTP endpoints only."""
