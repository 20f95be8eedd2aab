"""The gate in front of tenant SQL (execute_query): one read-only statement, no
server names. It reads text only; running it is storage's job. Also the fusion of ranked
lists for hybrid search (fusion.py). May import validation and everything below it."""
