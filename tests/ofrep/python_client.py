"""Evaluates flags through the real OpenFeature Python SDK + OFREP provider.

Usage: python_client.py BASE_URL TOKEN FLAG USERS
Prints one JSON object: {"users": {user: {value, reason, variant}}, "unknown": {...}, "missing_key": {...}}.
"""
import json
import sys

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext


def main() -> None:
    base_url, token, flag, users = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    api.set_provider(OFREPProvider(base_url, headers_factory=lambda: {"Authorization": f"Bearer {token}"}, timeout=5.0))
    client = api.get_client()
    out = {"users": {}}
    for i in range(users):
        user = f"user-{i}"
        d = client.get_boolean_details(flag, False, EvaluationContext(targeting_key=user))
        if d.error_code is not None:
            raise SystemExit(f"{user}: {d.error_code} {d.error_message}")
        out["users"][user] = {"value": d.value, "reason": str(d.reason), "variant": d.variant}
    unknown = client.get_boolean_details("no-such-flag", True, EvaluationContext(targeting_key="user-1"))
    out["unknown"] = {"value": unknown.value, "error_code": str(unknown.error_code)}
    missing = client.get_boolean_details(flag, True, EvaluationContext())
    out["missing_key"] = {"value": missing.value, "error_code": str(missing.error_code)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
