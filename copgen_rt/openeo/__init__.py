"""openEO: the UDF a user sends to a backend (`udf.py`, docs/chains.md)."""
