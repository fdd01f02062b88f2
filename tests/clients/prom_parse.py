"""Parses a Prometheus text exposition from stdin with the official client's
parser and prints every sample as JSON: [{"name", "labels", "value"}, ...].
Exits non-zero (with the parser's error) if the text does not parse."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
samples = []
for family in text_string_to_metric_families(text):
    if not family.documentation:
        sys.exit(f"family {family.name} has no HELP text")
    for s in family.samples:
        samples.append({"name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(samples))
