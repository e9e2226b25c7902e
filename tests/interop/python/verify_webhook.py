#!/usr/bin/env python3
"""Verifies one signed webhook with the official Standard Webhooks library, independently of
Switchboard's own code (services/dispatcher/src/signature.rs).

    verify_webhook.py MSG_ID TIMESTAMP SECRET SIGNATURE_HEADER < BODY

SECRET is the receiver's secret (whsec_...), SIGNATURE_HEADER the webhook-signature header as
sent (space-separated v1,<base64> entries), BODY the raw request body on standard input. Exits 0
when standardwebhooks.Webhook accepts the request, 1 with the library's reason when it does not,
2 on a usage error. The timestamp must be within the library's tolerance (5 minutes) of now.
"""

import sys

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    msg_id, timestamp, secret, signature = argv[1:]
    body = sys.stdin.buffer.read()
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": signature,
    }
    try:
        Webhook(secret).verify(body, headers, json_parse=False)
    except WebhookVerificationError as error:
        print(f"INVALID: {error}")
        return 1
    print("VALID")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
