"""The dashboard's pages, one module per group: each page parses its request, calls one
service and shapes the answer."""
